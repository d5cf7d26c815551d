"""The sweep over target domains: one Ray Tune search with Optuna per leave-one-domain-out split.

For each target domain, Ray Tune runs ``num_trials`` trials whose MER settings (lambda, estimator,
estimator parameters) Optuna's TPE sampler proposes; ASHA stops weak trials early on source
validation accuracy. Each trial drives a Ray Train ``TorchTrainer`` (DDP workers). The selected
configuration's target accuracies (on the target's train and test lists together, and on its
test list alone) are reported with the name of the selection method.

MLflow layout: one run per sweep has the resolved config, data counts and the results table.
Under it is one run per target domain, and under each of those one run per trial, written by
Ray Tune's ``MLflowLoggerCallback`` (params, per-epoch metrics).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import ray.tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from merdg.config import ConfigError, JobConfig
from merdg.selection import SELECTION_METHODS, TrialHistory, select
from merdg.tracking import Tracker
from merdg.training.trainer import WorkerResources, build_datasets, build_trainer
from merdg.tuning.results import TargetResult
from merdg.tuning.space import SearchSpace, mer_config_from_trial, suggest_mer_params

logger = logging.getLogger(__name__)

METRIC = "val_acc"
"""The metric Optuna and ASHA maximise: accuracy on held-out source-domain data."""

HISTORY_COLUMNS = ("epoch", "val_acc", "target_acc", "target_test_acc")
"""The per-epoch metrics that model selection reads from each trial."""


@dataclass(frozen=True)
class TargetPlan:
    """Inputs of one target domain's search besides the job config."""

    target: str
    sources: tuple[str, ...]
    cache_path: Path
    num_classes: int
    resources: WorkerResources
    concurrency: int
    sweep_id: str


def run_trial(config: dict[str, Any], *, job: JobConfig, plan: TargetPlan,
              datasets: dict[str, ray.data.Dataset]) -> None:
    """Train one sampled MER configuration (a Ray Tune function trainable).

    The trial only drives a ``TorchTrainer`` over datasets materialized once per target; the
    trainer's workers report each epoch to Tune through ``TuneReportCallback``.
    """
    mer = mer_config_from_trial(config, base=job.mer)
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = build_trainer(
        job,
        mer,
        datasets,
        plan.num_classes,
        plan.resources,
        name=f"{plan.sweep_id}-{plan.target}-{trial_id}",
        storage_path=job.output_dir / "train",
        callbacks=[TuneReportCallback()],
    )
    trainer.fit()


class TrialProgress(ray.tune.Callback):
    """Logs one line per finished trial: its sampled settings and best source validation accuracy."""

    def __init__(self, target: str, num_trials: int):
        self.target = target
        self.num_trials = num_trials
        self.finished = 0
        self.best_val: dict[str, float] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.best_val[trial.trial_id] = max(self.best_val.get(trial.trial_id, 0.0), float(result.get(METRIC, 0.0)))

    def _log(self, trial, outcome: str) -> None:
        self.finished += 1
        last = trial.last_result or {}
        logger.info(
            "target %s: trial %d/%d %s after %s epochs (%s); best source val acc %.2f%%",
            self.target, self.finished, self.num_trials, outcome, last.get("epoch", 0),
            trial.config, self.best_val.get(trial.trial_id, 0.0),
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._log(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._log(trial, "FAILED")


def _histories(result_grid: ray.tune.ResultGrid) -> tuple[list[TrialHistory], list[str]]:
    """Return the per-epoch histories of the trials that reported, and the errors of those that failed."""
    histories = []
    errors = []
    for result in result_grid:
        if result.error is not None:
            errors.append(str(result.error))
            logger.warning("trial %s failed: %s", result.metrics.get("trial_id", "?"), result.error)
        frame = result.metrics_dataframe
        if frame is None or frame.empty or METRIC not in frame:
            continue
        epochs = frame[list(HISTORY_COLUMNS)].dropna().to_dict("records")
        trial_id = str(result.metrics.get("trial_id", len(histories)))
        histories.append(TrialHistory(trial_id=trial_id, params=dict(result.config), epochs=epochs))
    return histories, errors


def _mark_selected_trial(tracker: Tracker, parent_run_id: str, trial_id: str) -> None:
    """Tag the MLflow run of the selected trial (Tune names the run after the trial)."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    for run in runs:
        if run.data.tags.get("trial_name", "").endswith(trial_id):
            tracker.set_tags(run.info.run_id, {"merdg.selected": "true"})


def _build_tuner(job: JobConfig, plan: TargetPlan, space: SearchSpace, tracker: Tracker, run_id: str) -> ray.tune.Tuner:
    """Return the Tuner of one target: Optuna's TPE sampler, ASHA, and trial runs nested in MLflow."""
    sampler = optuna.samplers.TPESampler(seed=job.tune.seed, n_startup_trials=max(1, job.tune.num_trials // 2))
    # metric and mode go to the searcher and scheduler themselves: Tune's ConcurrencyLimiter, used
    # with max_concurrent_trials, does not pass TuneConfig's metric on to OptunaSearch.
    searcher = OptunaSearch(
        space=functools.partial(suggest_mer_params, space=space), metric=METRIC, mode="max", sampler=sampler
    )
    scheduler = ASHAScheduler(
        metric=METRIC,
        mode="max",
        time_attr="training_iteration",
        max_t=job.train.epochs,
        grace_period=min(job.tune.grace_period, job.train.epochs),
        reduction_factor=job.tune.reduction_factor,
    )

    datasets = build_datasets(plan.cache_path, plan.sources, plan.target, job)
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, job=job, plan=plan, datasets=datasets),
        {"CPU": plan.resources.trial_driver_cpus},
    )
    mlflow_callback = MLflowLoggerCallback(
        tracking_uri=tracker.tracking_uri,
        experiment_name=tracker.experiment,
        tags={"mlflow.parentRunId": run_id, "merdg.target": plan.target},
    )
    return ray.tune.Tuner(
        trainable,
        tune_config=ray.tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=job.tune.num_trials,
            max_concurrent_trials=plan.concurrency,
        ),
        run_config=ray.tune.RunConfig(
            name=f"{plan.sweep_id}-{plan.target}",
            storage_path=str((job.output_dir / "tune").resolve()),
            callbacks=[mlflow_callback, TrialProgress(plan.target, job.tune.num_trials)],
            verbose=0,
        ),
    )


def tune_target(job: JobConfig, plan: TargetPlan, space: SearchSpace, tracker: Tracker, sweep_run_id: str) -> TargetResult:
    """Search MER's settings for one target domain and return the selected configuration."""
    selection_method = SELECTION_METHODS[job.tune.selection]
    run_id = tracker.start_run(
        f"target={plan.target}",
        parent_run_id=sweep_run_id,
        tags={"merdg.target": plan.target, "merdg.sources": ",".join(plan.sources),
              "merdg.selection": selection_method.label},
    )
    tracker.log_params(run_id, {"target": plan.target, "sources": ",".join(plan.sources),
                                "num_trials": job.tune.num_trials, "selection": selection_method.name})
    status = "FAILED"
    try:
        tuner = _build_tuner(job, plan, space, tracker, run_id)
        histories, errors = _histories(tuner.fit())
        failed = len(errors)
        if not histories:
            first_error = errors[0][-2000:] if errors else "no error was reported"
            raise RuntimeError(
                f"every trial for target {plan.target!r} failed before reporting an epoch. "
                f"First trial error:\n{first_error}\nRay Tune logs: {job.output_dir / 'tune'}"
            )
        selection = select(histories, job.tune.selection)
        _mark_selected_trial(tracker, run_id, selection.trial_id)
        tracker.log_metrics(run_id, {
            "selected_val_acc": selection.val_acc,
            "selected_target_acc": selection.target_acc,
            "selected_target_test_acc": selection.target_test_acc,
            "selected_epoch": selection.epoch,
            "failed_trials": failed,
        })
        tracker.log_params(run_id, {"selected": selection.params})
        status = "FINISHED"
    finally:
        tracker.end_run(run_id, status)
    return TargetResult(
        target=plan.target, sources=list(plan.sources), selection=selection,
        num_trials=job.tune.num_trials, num_failed=failed, run_id=run_id,
    )


def leave_one_out(domains: Sequence[str], targets: Sequence[str] | None) -> list[tuple[str, tuple[str, ...]]]:
    """Return (target, sources) pairs: each target domain against all the other domains."""
    chosen = list(targets) if targets else list(domains)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"invalid --tune.targets: {chosen} lists a domain twice")
    unknown = [target for target in chosen if target not in domains]
    if unknown:
        raise ConfigError(f"invalid --tune.targets: {unknown} not among the dataset's domains {list(domains)}")
    return [(target, tuple(d for d in domains if d != target)) for target in chosen]

