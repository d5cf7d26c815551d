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
import math
from collections.abc import Mapping
from typing import Any

from ray._private.dict import flatten_dict
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION

from merdg.tracking import UNLOGGED_RUN_PREFIX, Tracker

logger = logging.getLogger(__name__)

PARENT_RUN_TAG = "mlflow.parentRunId"


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """Return the finite int and float values of a Tune result, flattened with '/' as Ray's MLflow logger does.

    Booleans (Tune's ``done``), text and values that are not finite are left out.
    """
    metrics = {}
    for key, value in flatten_dict(dict(result)).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        metrics[key] = float(value)
    return metrics


class TrialMLflowCallback(MLflowLoggerCallback):
    """Log every Tune trial to its own MLflow run through ``tracker``, and go on while the server is down.

    The runs are those of ``MLflowLoggerCallback``. Each trial gets one run, named after the trial
    and tagged ``trial_name``, with the trial's config as params when the trial starts. Every
    finite number of each result (``numeric_metrics``) is logged as a metric at step
    ``timesteps_total``, or else ``training_iteration``, in one batch per result, and the run ends
    FINISHED or FAILED with the trial. The base class's ``save_artifact`` and
    ``log_params_on_trial_end`` options are not offered. Unlike the base class:

    - A trial that Tune runs again after ``Tuner.restore`` continues its earlier run (found by
      the parent run and the trial name, reopened and tagged ``merdg.resumed``) instead of
      opening a second one. While the server is unreachable, it gets a new run in the unlogged file.
    - A trial that reports or ends before its start was logged (one that failed to start) still
      gets a run, where the base class raises ``KeyError``.

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
        if trial in self._trial_runs:
            run_id = self._trial_runs[trial]
        else:
            run_id = self._earlier_run(trial)
            if run_id is not None:
                self._trial_runs[trial] = run_id
                self.tracker.reopen_run(run_id)
                self.tracker.set_tags(run_id, {"merdg.resumed": "true"})
                return
            tags = dict(self.tags)
            parent_run_id = tags.pop(PARENT_RUN_TAG, None)
            tags["trial_name"] = str(trial)
            run_id = self.tracker.start_run(str(trial), parent_run_id=parent_run_id, tags=tags)
            self._trial_runs[trial] = run_id
        self.tracker.log_params(run_id, flatten_dict(dict(trial.config)))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        step = result.get(TIMESTEPS_TOTAL) or result.get(TRAINING_ITERATION) or 0
        self.tracker.log_metrics(self._trial_runs[trial], numeric_metrics(result), step=int(step))

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        self.tracker.end_run(self._trial_runs[trial], "FAILED" if failed else "FINISHED")

    def _earlier_run(self, trial) -> str | None:
        """Return the id of the trial's run from before a ``Tuner.restore``, or None (also while the server is down)."""
        parent_run_id = self.tags.get(PARENT_RUN_TAG)
        if not parent_run_id or parent_run_id.startswith(UNLOGGED_RUN_PREFIX) or not self.tracker.reachable():
            return None
        run = self.tracker.find_run({PARENT_RUN_TAG: parent_run_id, "trial_name": str(trial)})
        return run.info.run_id if run is not None else None
