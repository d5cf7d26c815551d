"""One cell of a sweep: the search for a (protocol, target, modalities, host) and its seed retraining.

A cell runs up to four Ray Tune experiments, each named after the cell's identity so that an
interrupted sweep restores them instead of starting over:

1. ``search``: ``num_trials`` trials whose MER settings (lambda, estimator, estimator
   parameters) Optuna's TPE sampler proposes; ASHA stops weak trials early on the selection
   method's metric. Under ``lodo`` selection each trial trains one model per source domain on
   the other sources and reports the mean held-out-source accuracy per epoch.
2. ``baseline-lodo`` (``lodo`` only): the same folds for the host method without MER, to
   select its epoch.
3. ``mer-seeds`` and ``baseline-seeds``: the selected configuration, and the host method
   without MER, retrained on all source domains with each seed of ``--tune.seeds``.

Each trial drives a Ray Train ``TorchTrainer`` (DDP workers) and is an MLflow run nested under
the cell's run, written by ``TrialMLflowCallback`` (params, per-epoch metrics).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import ray
import ray.tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from merdg.config import ConfigError, JobConfig
from merdg.selection import SELECTION_METHODS, Selection, TrialHistory, select, select_seed_epoch
from merdg.tracking import Tracker
from merdg.training.loop import TARGET_CONFUSION
from merdg.training.trainer import build_datasets
from merdg.tuning.mlflow_callback import TrialMLflowCallback
from merdg.tuning.results import CellResult, SeedResult, TrialSummary, VariantResult
from merdg.tuning.space import SearchSpace, suggest_mer_params
from merdg.tuning.trials import Cell, CellPlan, run_lodo_trial, run_trial

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "val_acc", "target_acc", "target_test_acc", "lodo_acc")
"""The per-epoch metrics that model selection reads from each trial (those a trial reports)."""

def leave_one_out(domains: Sequence[str], targets: Sequence[str] | None) -> list[tuple[str, tuple[str, ...]]]:
    """Return (target, sources) pairs: each target domain against all the other domains."""
    chosen = _check_targets(domains, targets)
    return [(target, tuple(d for d in domains if d != target)) for target in chosen]


def single_source(domains: Sequence[str], targets: Sequence[str] | None) -> list[tuple[str, tuple[str, ...]]]:
    """Return (target, (source,)) pairs: each target domain against each other domain alone."""
    chosen = _check_targets(domains, targets)
    return [(target, (source,)) for target in chosen for source in domains if source != target]


def _check_targets(domains: Sequence[str], targets: Sequence[str] | None) -> list[str]:
    chosen = list(targets) if targets else list(domains)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"invalid --tune.targets: {chosen} lists a domain twice")
    unknown = [target for target in chosen if target not in domains]
    if unknown:
        raise ConfigError(f"invalid --tune.targets: {unknown} not among the dataset's domains {list(domains)}")
    return chosen


def plan_cells(job: JobConfig, domains: Sequence[str]) -> list[Cell]:
    """Return every cell the job's config covers, grouped by protocol, modality set and host method."""
    cells = []
    for protocol in job.tune.protocols:
        pairs = leave_one_out(domains, job.tune.targets) if protocol == "multi_source" else single_source(
            domains, job.tune.targets)
        if job.tune.selection == "lodo" and any(len(sources) < 2 for _, sources in pairs):
            raise ConfigError("invalid --tune.selection lodo: it needs two or more source domains per target, "
                              f"and {len(domains)} domains leave one; choose source_val")
        for modalities in job.modality_sets:
            for method in job.host_methods:
                cells.extend(Cell(protocol, target, sources, tuple(modalities), method) for target, sources in pairs)
    return cells


class TrialProgress(ray.tune.Callback):
    """Logs progress without flooding the console: one line per finished trial (done and left, its
    settings, epochs and best metric), and between those at most one epoch line every
    ``interval_s`` seconds."""

    def __init__(self, label: str, num_trials: int, metric: str, epochs: int = 0, interval_s: float = 60.0):
        self.label = label
        self.num_trials = num_trials
        self.metric = metric
        self.epochs = epochs
        self.interval_s = interval_s
        self.finished = 0
        self.best: dict[str, float] = {}
        self._last_line = time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = float(result.get(self.metric, 0.0))
        self.best[trial.trial_id] = max(self.best.get(trial.trial_id, -math.inf), value)
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            logger.info("%s: trial %s at epoch %s/%s, %s %.2f%%; %d of %d trials finished", self.label,
                        trial.trial_id, result.get("epoch", "?"), self.epochs or "?", self.metric, value,
                        self.finished, self.num_trials)

    def _log(self, trial, outcome: str) -> None:
        self.finished += 1
        last = trial.last_result or {}
        logger.info("%s: trial %d/%d %s after %s epochs (%s); best %s %.2f%%", self.label, self.finished,
                    self.num_trials, outcome, last.get("epoch", 0), trial.config, self.metric,
                    self.best.get(trial.trial_id, math.nan))

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
        if frame is None or frame.empty or "epoch" not in frame:
            continue
        columns = [c for c in HISTORY_COLUMNS if c in frame]
        # A trial restored from its checkpoint may report an epoch again; its latest report counts.
        frame = frame[columns + [c for c in (TARGET_CONFUSION,) if c in frame]].dropna(subset=columns)
        frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch")
        trial_id = str(result.metrics.get("trial_id", len(histories)))
        histories.append(TrialHistory(trial_id=trial_id, params=dict(result.config), epochs=frame.to_dict("records")))
    return histories, errors


class CellRunner:
    """Runs the Tune experiments of one cell and turns their trials into a ``CellResult``."""

    def __init__(self, job: JobConfig, plan: CellPlan, space: SearchSpace, tracker: Tracker, run_id: str):
        self.job = job
        self.plan = plan
        self.space = space
        self.tracker = tracker
        self.run_id = run_id
        self.rule = SELECTION_METHODS[job.tune.selection]
        cell = plan.cell
        self.datasets = build_datasets(plan.cache_path, cell.sources, cell.target, job)
        self.folds: dict[str, dict[str, ray.data.Dataset]] = {}
        if self.rule.name == "lodo":
            for held_out in cell.sources:
                rest = tuple(d for d in cell.sources if d != held_out)
                self.folds[held_out] = build_datasets(plan.cache_path, rest, held_out, job)

    def _trainable(self, lodo: bool):
        if lodo:
            trainable = ray.tune.with_parameters(run_lodo_trial, job=self.job, plan=self.plan, folds=self.folds)
        else:
            trainable = ray.tune.with_parameters(run_trial, job=self.job, plan=self.plan, datasets=self.datasets)
        return ray.tune.with_resources(trainable, {"CPU": self.plan.resources.trial_driver_cpus})

    def _fit(self, phase: str, *, lodo: bool, num_samples: int, param_space: dict | None = None,
             searcher: Any = None, scheduler: Any = None) -> tuple[list[TrialHistory], list[str]]:
        """Run (or restore and finish) one Tune experiment of the cell and return its trials' histories."""
        name = f"{self.plan.cell_id}-{phase}"
        path = (self.job.output_dir / "tune" / name).resolve()
        trainable = self._trainable(lodo)
        if self.job.tune.resume and ray.tune.Tuner.can_restore(str(path)):
            logger.info("%s: %s restored from %s", self.plan.cell.name, phase, path)
            tuner = ray.tune.Tuner.restore(str(path), trainable, resume_errored=True)
        else:
            mlflow_callback = TrialMLflowCallback(
                self.tracker,
                tags={"mlflow.parentRunId": self.run_id, "merdg.target": self.plan.cell.target, "merdg.phase": phase},
            )
            tuner = ray.tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=ray.tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=num_samples,
                                                max_concurrent_trials=self.plan.concurrency),
                run_config=ray.tune.RunConfig(
                    name=name, storage_path=str(path.parent),
                    callbacks=[mlflow_callback,
                               TrialProgress(f"{self.plan.cell.name} {phase}", self._count(param_space, num_samples),
                                             self.rule.metric if phase.endswith(("search", "lodo")) else "val_acc",
                                             epochs=self.job.train.epochs)],
                    verbose=0,
                ),
            )
        return _histories(tuner.fit())

    @staticmethod
    def _count(param_space: dict | None, num_samples: int) -> int:
        grid = (param_space or {}).get("seed")
        return num_samples * (len(grid["grid_search"]) if isinstance(grid, dict) else 1)

    def search(self) -> tuple[Selection, list[TrialHistory], int]:
        """Search MER's settings; return the selected trial and epoch, every trial, and the failures."""
        job = self.job
        sampler = optuna.samplers.TPESampler(seed=job.tune.seed, n_startup_trials=max(1, job.tune.num_trials // 2))
        # metric and mode go to the searcher and scheduler themselves: Tune's ConcurrencyLimiter, used
        # with max_concurrent_trials, does not pass TuneConfig's metric on to OptunaSearch.
        searcher = OptunaSearch(space=functools.partial(suggest_mer_params, space=self.space),
                                metric=self.rule.metric, mode="max", sampler=sampler)
        scheduler = ASHAScheduler(metric=self.rule.metric, mode="max", time_attr="training_iteration",
                                  max_t=job.train.epochs, grace_period=min(job.tune.grace_period, job.train.epochs),
                                  reduction_factor=job.tune.reduction_factor)
        histories, errors = self._fit("search", lodo=self.rule.name == "lodo", num_samples=job.tune.num_trials,
                                      searcher=searcher, scheduler=scheduler)
        if not histories:
            first_error = errors[0][-2000:] if errors else "no error was reported"
            raise RuntimeError(
                f"every search trial of {self.plan.cell.name} failed before reporting an epoch. "
                f"First trial error:\n{first_error}\nRay Tune logs: {job.output_dir / 'tune'}"
            )
        return select(histories, self.rule.name), histories, len(errors)

    def retrain(self, variant: str, params: dict[str, Any], selected_epoch: int | None) -> VariantResult:
        """Train ``params`` with every seed on all source domains and read each at its selected epoch."""
        seeds = list(self.job.tune.seeds)
        histories, errors = self._fit(f"{variant}-seeds", lodo=False, num_samples=1,
                                      param_space={**params, "seed": ray.tune.grid_search(seeds)})
        if errors:
            logger.warning("%s: %d of %d %s seed runs failed", self.plan.cell.name, len(errors), len(seeds), variant)
        results = []
        for history in sorted(histories, key=lambda h: int(h.params["seed"])):
            chosen = select_seed_epoch(history, self.rule.name, selected_epoch or self.job.train.epochs)
            at_epoch = next(e for e in history.epochs if int(e["epoch"]) == chosen.epoch)
            confusion = json.loads(at_epoch[TARGET_CONFUSION]) if isinstance(at_epoch.get(TARGET_CONFUSION), str) else None
            results.append(SeedResult(seed=int(history.params["seed"]), epoch=chosen.epoch, val_acc=chosen.val_acc,
                                      target_acc=chosen.target_acc, target_test_acc=chosen.target_test_acc,
                                      confusion=confusion))
        if not results:
            raise RuntimeError(f"every {variant} seed run of {self.plan.cell.name} failed. First error: {errors[:1]}. "
                               f"Ray Tune logs: {self.job.output_dir / 'tune'}")
        return VariantResult(params=params, seeds=results, selected_epoch=selected_epoch)

    def baseline_epoch(self, params: dict[str, Any]) -> int | None:
        """Under a fixed-epoch method (lodo), select the baseline's epoch by the same folds; else None."""
        if not self.rule.fixed_epoch:
            return None
        histories, errors = self._fit("baseline-lodo", lodo=True, num_samples=1, param_space=params)
        if not histories:
            raise RuntimeError(f"the baseline's lodo run of {self.plan.cell.name} failed. First error: {errors[:1]}. "
                               f"Ray Tune logs: {self.job.output_dir / 'tune'}")
        return select(histories, self.rule.name).epoch

    def run(self) -> CellResult:
        selection, histories, failed = self.search()
        trials = []
        for history in histories:
            best = select([history], self.rule.name)
            trials.append(TrialSummary(trial_id=history.trial_id, params=history.params, epochs=len(history.epochs),
                                       score=max(self.rule.score(e) for e in history.epochs),
                                       target_acc=best.target_acc))
        fixed = selection.epoch if self.rule.fixed_epoch else None
        mer = self.retrain("mer", selection.params, fixed)
        baseline = None
        if self.job.tune.baseline:
            params = {"lambda": 0.0, "estimator": self.job.mer.estimator}
            baseline = self.retrain("baseline", params, self.baseline_epoch(params))
        cell = self.plan.cell
        return CellResult(
            protocol=cell.protocol, target=cell.target, sources=list(cell.sources), modalities=list(cell.modalities),
            method=cell.method, selection=self.rule.name, selection_label=self.rule.label, mer=mer, baseline=baseline,
            trials=trials, num_failed=failed, run_id=self.run_id,
        )
