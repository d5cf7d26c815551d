"""Ray Tune's MLflow logger for trial runs, writing through ``merdg.tracking.Tracker``.

Ray's ``MLflowLoggerCallback`` calls MLflow directly from Tune's driver loop. When the tracking
server dies mid-search, each call waits through the MLflow client's retries and then raises into
Tune: with Ray 2.60, MLflow 3.17 and MLflow's default retries, the first metric after the server
was killed stalled the search for 8 minutes, and then ``Tuner.fit`` raised ``TuneError``.
``TrialMLflowCallback`` logs the same runs, tags, params and metrics through a ``Tracker``
instead, so the search goes on and the writes that the server misses go to the tracker's
unlogged file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ray._private.dict import flatten_dict
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION

from merdg.tracking import Tracker

logger = logging.getLogger(__name__)

PARENT_RUN_TAG = "mlflow.parentRunId"


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """Return the values of a Tune result that convert to float, flattened with '/' as Ray's MLflow logger does."""
    metrics = {}
    for key, value in flatten_dict(dict(result)).items():
        try:
            metrics[key] = float(value)
        except (TypeError, ValueError):
            continue
    return metrics


class TrialMLflowCallback(MLflowLoggerCallback):
    """Log every Tune trial to its own MLflow run through ``tracker``, and go on while the server is down.

    The runs are those of ``MLflowLoggerCallback``. Each trial gets one run, named after the trial
    and tagged ``trial_name``, with the trial's config as params when the trial starts. Every
    numeric value of each result is logged as a metric at step ``timesteps_total``, or else
    ``training_iteration``, and the run ends FINISHED or FAILED with the trial. The base class's
    ``save_artifact`` and ``log_params_on_trial_end`` options are not offered.

    Args:
        tracker: the job's tracker. Its tracking URI and experiment are used, and its unlogged
            file and count are shared, so ``tracker.report_unlogged()`` covers the trial runs too.
        tags: tags of every trial run. ``mlflow.parentRunId`` nests the runs under that run.
    """

    def __init__(self, tracker: Tracker, *, tags: Mapping[str, str] | None = None):
        super().__init__(tracking_uri=tracker.tracking_uri, experiment_name=tracker.experiment, tags=dict(tags or {}))
        self.tracker = tracker
        self._trial_runs: dict[Any, str] = {}

    def setup(self, *args, **kwargs) -> None:
        # The tracker has opened the experiment. MLflowLoggerCallback.setup would contact the server
        # again, failing the whole search if it is down, and would set MLflow's global tracking URI.
        self._trial_runs = {}

    def log_trial_start(self, trial) -> None:
        if trial not in self._trial_runs:
            tags = dict(self.tags)
            parent_run_id = tags.pop(PARENT_RUN_TAG, None)
            tags["trial_name"] = str(trial)
            self._trial_runs[trial] = self.tracker.start_run(str(trial), parent_run_id=parent_run_id, tags=tags)
        self.tracker.log_params(self._trial_runs[trial], flatten_dict(dict(trial.config)))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        step = result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION]
        self.tracker.log_metrics(self._trial_runs[trial], numeric_metrics(result), step=int(step))

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self.tracker.end_run(self._trial_runs[trial], "FAILED" if failed else "FINISHED")
