"""Compare the main job's search (Optuna TPE and ASHA) with a full grid over the same discrete space.

Run from the repository root. With the defaults it took 13 minutes on a shared 2-core machine
(13 trials of 36 to 55 s each):

    python benchmarks/tuning_efficiency.py
    python benchmarks/tuning_efficiency.py --target studio --num-trials 5 --json efficiency.json

The script takes one target domain of the embedded benchmark (``--target``, default retro) and
trains on the other two domains. It runs two Ray Tune experiments on the job's decode cache, both
with the main job's trainable, ``run_trial`` (a Ray Train ``TorchTrainer`` of 2 DDP workers):

- grid: every point of ``--space`` (categorical and constant distributions only), each trained
  for all ``--epochs`` epochs;
- search: ``CellRunner.search`` as the main job runs it, that is ``--num-trials`` trials proposed
  by Optuna's TPE sampler and stopped early by ASHA on source validation accuracy (``val_acc``),
  with the main job's grace period (3 epochs) and reduction factor (2).

Both run one trial at a time (``--tune.max_concurrent_trials`` 1, the main job's default), without
MLflow and without the diagnostics after the last epoch. Every reported epoch is recorded in the
order that Tune receives it. One trial-epoch is one epoch of one trial, whatever its wall time.

The report:

- the grid's best ``val_acc``, over every point and epoch, which is what source-domain validation
  selects;
- the trial-epochs the search spent until a reported ``val_acc`` first came within ``--tolerance``
  points of that best, or that it never did;
- the trial-epochs the grid spends to reach the same when its points run in a random order (the
  exact mean over all orders, and the mean and range over ``--shuffles`` seeded shuffles), and in
  the worst order. A grid point counts all its epochs, except the one that reaches the threshold,
  which counts its epochs up to that one;
- their ratio, grid over search.

``--json FILE`` writes every trial's per-epoch ``val_acc`` and ``target_acc``, its cumulative
trial-epochs at completion and the summary.
"""

from __future__ import annotations

import os

# Keep the local Ray node on 127.0.0.1. This must be set before Ray starts.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse
import copy
import dataclasses
import itertools
import json
import logging
import math
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.tune
from ray.tune.search import Searcher
from ray.tune.utils import flatten_dict
from ray.tune.utils.util import unflatten_dict

from merdg.config import JobConfig
from merdg.data.datasets import load_dataset
from merdg.data.pipeline import build_decode_cache
from merdg.selection import TrialHistory
from merdg.training.trainer import check_feasible, max_concurrent_trials, size_workers
from merdg.tuning.job import check_splits, init_ray, quiet_ray_data, resolve_paths, validate_job
from merdg.tuning.space import Distribution, SearchSpace, SearchSpaceError, load_space
from merdg.tuning.sweep import CellPlan, CellRunner, _histories, plan_cells

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPACE = REPO_ROOT / "tune_spaces" / "discrete.yaml"

logger = logging.getLogger("tuning_efficiency")


# ---------------------------------------------------------------------------------------------
# The grid of a discrete space


def _discrete_values(distribution: Distribution, where: str, path: str) -> tuple[Any, ...]:
    if distribution.kind not in ("categorical", "constant"):
        raise SearchSpaceError(
            f"{path}: {where}: a grid needs categorical or constant distributions, got {distribution.kind!r}. "
            "List the values to try as {distribution: categorical, choices: [...]}"
        )
    return distribution.candidates()


def grid_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Return every trial config of a discrete space, nested as ``mer_config_from_trial`` reads it.

    The points are ordered by estimator, then by the product of the values in the space's order.
    Raises ``SearchSpaceError`` when a distribution is continuous.
    """
    shared = [("lambda", _discrete_values(space.weight, "lambda", space.path))]
    if space.normalize is not None:
        shared.append(("normalize", _discrete_values(space.normalize, "normalize", space.path)))
    for modality, distribution in (space.modality_weights or {}).items():
        where = f"modality_weights.{modality}"
        shared.append((f"modality_weights/{modality}", _discrete_values(distribution, where, space.path)))

    points = []
    for estimator, params in space.estimators.items():
        axes = shared + [
            (f"{estimator}/{param}", _discrete_values(distribution, f"estimators.{estimator}.{param}", space.path))
            for param, distribution in params.items()
        ]
        names = [name for name, _ in axes]
        for values in itertools.product(*(values for _, values in axes)):
            points.append(unflatten_dict({"estimator": estimator, **dict(zip(names, values))}))
    return points


def point_label(config: dict[str, Any]) -> str:
    """Return a config's settings as 'estimator, lambda=1, ...', the same text for equal settings."""
    flat = flatten_dict(dict(config), delimiter="/")
    rest = [f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in sorted(flat.items()) if key != "estimator"]
    return ", ".join([str(flat.get("estimator", "?"))] + rest)


# ---------------------------------------------------------------------------------------------
# Recording the Tune experiments


@dataclass(frozen=True)
class EpochReport:
    """One epoch that a trial reported to Tune."""

    trial_id: str
    epoch: int
    val_acc: float
    """Accuracy (%) on the source domains' test lists."""
    target_acc: float
    """Accuracy (%) on the target domain's train and test lists together."""


@dataclass
class TrialRecord:
    """One trial of an experiment: its settings and per-epoch accuracies."""

    trial_id: str
    label: str
    config: dict[str, Any]
    val_acc: list[float] = field(default_factory=list)
    """val_acc (%) of epochs 1, 2, ..."""
    target_acc: list[float] = field(default_factory=list)
    """target_acc (%) of epochs 1, 2, ..."""
    status: str = "running"
    """'finished' (every epoch), 'stopped' (by the scheduler, before the last epoch) or 'failed'."""
    trial_epochs_at_end: int = 0
    """Trial-epochs the experiment had spent, over all its trials, when this trial ended."""
    time_s: float = 0.0
    """Tune's ``time_total_s`` at the trial's last report: seconds since the trial started, Ray Train's start-up included."""


@dataclass
class PhaseRecord:
    """One Tune experiment: its trials in completion order and every reported epoch in arrival order."""

    name: str
    trials: list[TrialRecord]
    reports: list[EpochReport]
    wall_s: float

    @property
    def trial_epochs(self) -> int:
        return len({(report.trial_id, report.epoch) for report in self.reports})


class EpochRecorder(ray.tune.Callback):
    """Records every epoch that trials report, in the order that Tune receives them, and each trial's end."""

    def __init__(self, max_epochs: int):
        self.max_epochs = max_epochs
        self.reports: list[EpochReport] = []
        self.trials: dict[str, TrialRecord] = {}
        self.completed: list[str] = []
        self._spent: set[tuple[str, int]] = set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        report = EpochReport(trial.trial_id, int(result["epoch"]), float(result["val_acc"]),
                             float(result.get("target_acc", math.nan)))
        self.reports.append(report)
        self._spent.add((report.trial_id, report.epoch))
        record = self.trials.setdefault(trial.trial_id, TrialRecord(trial.trial_id, point_label(trial.config),
                                                                    dict(trial.config)))
        # A trial restarted from its checkpoint may report an epoch again; its latest report counts.
        del record.val_acc[report.epoch - 1:], record.target_acc[report.epoch - 1:]
        record.val_acc.append(report.val_acc)
        record.target_acc.append(report.target_acc)
        record.time_s = float(result.get("time_total_s", math.nan))

    def _end(self, trial, status: str) -> None:
        record = self.trials.setdefault(trial.trial_id, TrialRecord(trial.trial_id, point_label(trial.config),
                                                                    dict(trial.config)))
        if status == "finished" and len(record.val_acc) < self.max_epochs:
            status = "stopped"
        record.status = status
        record.trial_epochs_at_end = len(self._spent)
        self.completed.append(trial.trial_id)
        logger.info("trial %d ended (%s) after %d epochs: %s, best val_acc %.2f%%, %d trial-epochs spent so far",
                    len(self.completed), status, len(record.val_acc), record.label,
                    max(record.val_acc, default=math.nan), len(self._spent))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "failed")


class PointSearcher(Searcher):
    """Proposes the given trial configs in order, then finishes."""

    def __init__(self, points: list[dict[str, Any]]):
        super().__init__()
        self._points = [copy.deepcopy(point) for point in points]

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        return self._points.pop(0) if self._points else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


class RecordedCellRunner(CellRunner):
    """The main job's ``CellRunner`` with its Tune experiments recorded instead of logged to MLflow.

    ``search`` is the main job's own, with the same sampler, searcher, scheduler and trainable.
    Only the experiment's callbacks differ. Every experiment starts fresh in ``job.output_dir``.
    """

    def __init__(self, job: JobConfig, plan: CellPlan, space: SearchSpace):
        super().__init__(job, plan, space, tracker=None, run_id="")
        self.phases: dict[str, PhaseRecord] = {}

    def _fit(self, phase: str, *, lodo: bool, num_samples: int, param_space: dict | None = None,
             searcher: Any = None, scheduler: Any = None) -> tuple[list[TrialHistory], list[str]]:
        name = f"{self.plan.cell_id}-{phase}"
        recorder = EpochRecorder(self.job.train.epochs)
        tuner = ray.tune.Tuner(
            self._trainable(lodo),
            param_space=param_space,
            tune_config=ray.tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=num_samples,
                                            max_concurrent_trials=self.plan.concurrency),
            run_config=ray.tune.RunConfig(name=name, storage_path=str((self.job.output_dir / "tune").resolve()),
                                          callbacks=[recorder], verbose=0),
        )
        started = time.perf_counter()
        result_grid = tuner.fit()
        wall_s = time.perf_counter() - started
        trials = [recorder.trials[trial_id] for trial_id in recorder.completed]
        self.phases[phase] = PhaseRecord(phase, trials, list(recorder.reports), wall_s)
        return _histories(result_grid)

    def run_grid(self, points: list[dict[str, Any]]) -> PhaseRecord:
        """Train every point for all epochs, in the given order, without a scheduler."""
        self._fit("grid", lodo=False, num_samples=len(points), searcher=PointSearcher(points))
        return self.phases["grid"]

    def run_search(self) -> PhaseRecord:
        """Run the main job's search (TPE and ASHA, ``--tune.num_trials`` trials)."""
        self.search()
        return self.phases["search"]


# ---------------------------------------------------------------------------------------------
# Trial-epochs to reach a threshold


def first_reach(curve: list[float], threshold: float) -> int | None:
    """Return the first epoch (1-based) whose value is >= threshold, or None."""
    return next((epoch for epoch, value in enumerate(curve, start=1) if value >= threshold), None)


def trial_epochs_until(reports: list[EpochReport], threshold: float) -> int | None:
    """Return the trial-epochs spent when a reported val_acc first reached threshold, or None.

    ``reports`` is in arrival order. An epoch that a restarted trial reports again is counted once.
    """
    spent: set[tuple[str, int]] = set()
    for report in reports:
        spent.add((report.trial_id, report.epoch))
        if report.val_acc >= threshold:
            return len(spent)
    return None


def grid_epochs_in_order(curves: list[list[float]], threshold: float, order: list[int]) -> int | None:
    """Return the trial-epochs a grid run in ``order`` spends until a val_acc reaches threshold, or None."""
    spent = 0
    for index in order:
        reached = first_reach(curves[index], threshold)
        if reached is not None:
            return spent + reached
        spent += len(curves[index])
    return None


def grid_epochs_worst(curves: list[list[float]], threshold: float) -> int | None:
    """Return the trial-epochs of the worst order: every point that never reaches, then the latest to reach."""
    reaching = [first_reach(curve, threshold) for curve in curves]
    if all(reached is None for reached in reaching):
        return None
    missing = sum(len(curve) for curve, reached in zip(curves, reaching) if reached is None)
    return missing + max(reached for reached in reaching if reached is not None)


def grid_epochs_expected(curves: list[list[float]], threshold: float) -> float | None:
    """Return the mean trial-epochs over all orders of the grid points, or None when no point reaches.

    With r points that reach the threshold, a point that never does runs before all r of them in
    1 / (r + 1) of the orders, and each reaching point is the first of them equally often.
    """
    reaching = [first_reach(curve, threshold) for curve in curves]
    reached = [epoch for epoch in reaching if epoch is not None]
    if not reached:
        return None
    missing = sum(len(curve) for curve, epoch in zip(curves, reaching) if epoch is None)
    return missing / (len(reached) + 1) + sum(reached) / len(reached)


def grid_epochs_shuffled(curves: list[list[float]], threshold: float, shuffles: int, seed: int) -> list[int]:
    """Return the trial-epochs of ``shuffles`` seeded random orders of the grid points."""
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(shuffles):
        spent = grid_epochs_in_order(curves, threshold, [int(i) for i in rng.permutation(len(curves))])
        if spent is not None:
            results.append(spent)
    return results


def best_epoch(trials: list[TrialRecord]) -> tuple[TrialRecord, int] | None:
    """Return the trial and 1-based epoch with the highest val_acc (the first such on ties), or None."""
    best = None
    for trial in trials:
        for epoch, value in enumerate(trial.val_acc, start=1):
            if best is None or value > best[0].val_acc[best[1] - 1]:
                best = (trial, epoch)
    return best


def summarize(grid: PhaseRecord, search: PhaseRecord, tolerance: float, shuffles: int, seed: int) -> dict[str, Any]:
    """Return the comparison's figures (trial-epochs, accuracies, ratios) as plain data."""
    grid_best = best_epoch(grid.trials)
    if grid_best is None:
        raise RuntimeError("no grid trial reported an epoch; see the Ray Tune logs under the output folder")
    best_trial, best_at = grid_best
    best_val = best_trial.val_acc[best_at - 1]
    # A small margin keeps values printed as equal from failing the comparison by rounding.
    threshold = best_val - tolerance - 1e-9
    curves = [trial.val_acc for trial in grid.trials if trial.val_acc]
    search_spent = trial_epochs_until(search.reports, threshold)
    expected = grid_epochs_expected(curves, threshold)
    worst = grid_epochs_worst(curves, threshold)
    shuffled = grid_epochs_shuffled(curves, threshold, shuffles, seed)
    search_best = best_epoch(search.trials)

    summary: dict[str, Any] = {
        "tolerance": tolerance,
        "grid_best_val_acc": best_val,
        "grid_best": {"label": best_trial.label, "epoch": best_at,
                      "target_acc": best_trial.target_acc[best_at - 1]},
        "grid_points": len(grid.trials),
        "grid_trial_epochs_total": grid.trial_epochs,
        "grid_points_within_tolerance": sum(first_reach(curve, threshold) is not None for curve in curves),
        "grid_trial_epochs_expected": expected,
        "grid_trial_epochs_shuffled": {"shuffles": shuffles, "seed": seed,
                                       "mean": float(np.mean(shuffled)) if shuffled else None,
                                       "min": min(shuffled, default=None), "max": max(shuffled, default=None)},
        "grid_trial_epochs_worst": worst,
        "search_trials": len(search.trials),
        "search_distinct_points": len({trial.label for trial in search.trials}),
        "search_trial_epochs_total": search.trial_epochs,
        "search_trials_stopped_early": sum(trial.status == "stopped" for trial in search.trials),
        "search_trial_epochs_to_reach": search_spent,
        "search_best_val_acc": None,
        "search_best": None,
        "ratio_expected": expected / search_spent if search_spent and expected is not None else None,
        "ratio_worst": worst / search_spent if search_spent and worst is not None else None,
        "grid_wall_s": grid.wall_s,
        "search_wall_s": search.wall_s,
    }
    if search_best is not None:
        trial, epoch = search_best
        summary["search_best_val_acc"] = trial.val_acc[epoch - 1]
        summary["search_best"] = {"label": trial.label, "epoch": epoch, "target_acc": trial.target_acc[epoch - 1]}
    summary["repeat_check"] = repeat_check(grid, search)
    return summary


def repeat_check(grid: PhaseRecord, search: PhaseRecord) -> dict[str, Any]:
    """Compare each search trial with the grid's run of the same settings, epoch by epoch.

    Every trial trains with the same seed, so a difference here is the run-to-run noise of training.
    """
    by_label = {trial.label: trial for trial in grid.trials}
    differences = []
    for trial in search.trials:
        twin = by_label.get(trial.label)
        if twin is None:
            continue
        differences += [abs(a - b) for a, b in zip(trial.val_acc, twin.val_acc)]
    return {"epochs_compared": len(differences), "max_abs_val_acc_difference": max(differences, default=None)}


# ---------------------------------------------------------------------------------------------
# Report


def _number(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def trials_table(phase: PhaseRecord) -> str:
    """Return a Markdown table of a phase's trials in completion order."""
    lines = ["| # | settings | status | val_acc per epoch (%) | best val_acc | trial-epochs at end | time (s) |",
             "|---|---|---|---|---|---|---|"]
    for index, trial in enumerate(phase.trials, start=1):
        curve = " ".join(f"{value:.1f}" for value in trial.val_acc)
        lines.append(f"| {index} | {trial.label} | {trial.status} | {curve} | "
                     f"{_number(max(trial.val_acc, default=None))} | {trial.trial_epochs_at_end} | {trial.time_s:.0f} |")
    return "\n".join(lines)


def summary_table(summary: dict[str, Any]) -> str:
    """Return the comparison as a Markdown table."""
    shuffled = summary["grid_trial_epochs_shuffled"]
    reached = summary["search_trial_epochs_to_reach"]
    rows = [
        ("grid: best val_acc (%), over every point and epoch",
         f"{summary['grid_best_val_acc']:.2f} ({summary['grid_best']['label']}, epoch {summary['grid_best']['epoch']})"),
        ("grid: points within the tolerance", f"{summary['grid_points_within_tolerance']} of {summary['grid_points']}"),
        ("grid: trial-epochs in all", str(summary["grid_trial_epochs_total"])),
        ("search: trials (distinct settings), stopped early by ASHA",
         f"{summary['search_trials']} ({summary['search_distinct_points']}), {summary['search_trials_stopped_early']}"),
        ("search: trial-epochs in all", str(summary["search_trial_epochs_total"])),
        ("search: best val_acc (%)",
         f"{_number(summary['search_best_val_acc'], 2)}"
         + (f" ({summary['search_best']['label']}, epoch {summary['search_best']['epoch']})"
            if summary["search_best"] else "")),
        (f"search: trial-epochs until val_acc >= grid best - {summary['tolerance']:g}",
         str(reached) if reached is not None else "never, within its trials"),
        ("grid: the same, mean over all orders", _number(summary["grid_trial_epochs_expected"])),
        (f"grid: the same, {shuffled['shuffles']} shuffles (mean, min-max)",
         f"{_number(shuffled['mean'])}, {shuffled['min']}-{shuffled['max']}"),
        ("grid: the same, worst order", _number(summary["grid_trial_epochs_worst"])),
        ("ratio grid / search, mean order", _number(summary["ratio_expected"], 2)),
        ("ratio grid / search, worst order", _number(summary["ratio_worst"], 2)),
        ("wall time (s), grid / search", f"{summary['grid_wall_s']:.0f} / {summary['search_wall_s']:.0f}"),
    ]
    lines = ["| figure | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tuning_efficiency.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="retro", help="target domain of the embedded benchmark (default: retro)")
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE,
                        help="discrete search-space YAML (categorical and constant distributions only)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of a full trial (default: 6)")
    parser.add_argument("--num-trials", type=int, default=JobConfig().tune.num_trials,
                        help="trials of the search; fewer than the grid's points (default: the main job's 4)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="accuracy points below the grid's best val_acc that count as reached (default: 1)")
    parser.add_argument("--shuffles", type=int, default=5, help="random grid orders to average (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler and of the shuffles")
    parser.add_argument("--clips-per-class", type=int, default=None,
                        help="clips per class and domain of the generated benchmark (default: the job's 20)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="folder of the generated benchmark and decode cache (default: MERDG_CACHE_DIR or ~/.cache/merdg)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="folder for Tune results and checkpoints (default: a temporary folder, removed at exit)")
    parser.add_argument("--json", type=Path, default=None, help="write every trial and the summary to this JSON file")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs {args.epochs} < 1")
    if args.num_trials < 1:
        parser.error(f"--num-trials {args.num_trials} < 1")
    if args.shuffles < 1:
        parser.error(f"--shuffles {args.shuffles} < 1")
    if args.tolerance < 0:
        parser.error(f"--tolerance {args.tolerance} < 0")
    return args


def build_job(args: argparse.Namespace, output_dir: Path) -> JobConfig:
    """Return the main job's default config with the benchmark's target, epochs, trials and space."""
    job = JobConfig()
    job.train.epochs = args.epochs
    job.train.diagnostics = False
    job.tune.space = args.space
    job.tune.num_trials = args.num_trials
    job.tune.targets = [args.target]
    job.tune.seed = args.seed
    job.tune.selection = "source_val"
    if args.clips_per_class is not None:
        job.data.benchmark = dataclasses.replace(job.data.benchmark, clips_per_class=args.clips_per_class)
    if args.cache_dir is not None:
        job.data.cache_dir = args.cache_dir
    job.output_dir = output_dir
    return resolve_paths(job, Path.cwd())


def run(args: argparse.Namespace, output_dir: Path) -> dict[str, Any]:
    """Run the grid and the search on one target domain; return the per-trial records and the summary."""
    job = build_job(args, output_dir)
    space = load_space(job.tune.space)
    points = grid_points(space)
    if args.num_trials >= len(points):
        raise SystemExit(f"tuning_efficiency.py: error: --num-trials {args.num_trials} is not smaller than the "
                         f"{len(points)} points of {job.tune.space}; give fewer trials or a larger space")
    validate_job(job)
    info = load_dataset(job.data)
    (cell,) = plan_cells(job, info.domains)
    check_splits(info, [(cell.target, cell.sources)])
    load_start = os.getloadavg()

    init_ray(job.ray_address)
    quiet_ray_data()
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    resources = size_workers(job, cluster_cpus)
    check_feasible(job, resources, ray.cluster_resources(), fixed=True)
    concurrency = max_concurrent_trials(job, resources, cluster_cpus)
    data = build_decode_cache(info.clips, job.data)
    plan = CellPlan(cell, data.path, info.num_classes, resources, concurrency, f"efficiency-{cell.target}")
    runner = RecordedCellRunner(cell.job(job), plan, space)

    logger.info("grid: %d points x %d epochs on %s", len(points), job.train.epochs, cell.name)
    grid = runner.run_grid(points)
    logger.info("search: %d trials (TPE and ASHA) on %s", job.tune.num_trials, cell.name)
    search = runner.run_search()
    load_end = os.getloadavg()

    summary = summarize(grid, search, args.tolerance, args.shuffles, args.seed)
    return {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "ray_cpus": cluster_cpus,
                    "load_average_start": load_start, "load_average_end": load_end},
        "cell": cell.name, "epochs": job.train.epochs, "space": str(job.tune.space), "grid_points": points,
        "asha": {"grace_period": min(job.tune.grace_period, job.train.epochs),
                 "reduction_factor": job.tune.reduction_factor},
        "grid": {"wall_s": grid.wall_s, "trials": [asdict(trial) for trial in grid.trials]},
        "search": {"wall_s": search.wall_s, "trials": [asdict(trial) for trial in search.trials]},
        "summary": summary,
        "_phases": (grid, search),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="merdg-efficiency-") as scratch:
        output_dir = args.output_dir or Path(scratch)
        try:
            record = run(args, output_dir)
        finally:
            ray.shutdown()
    grid, search = record.pop("_phases")
    summary = record["summary"]

    print(f"\n{record['cell']}, {record['epochs']} epochs per full trial, space {record['space']}, "
          f"ASHA grace period {record['asha']['grace_period']} and reduction factor {record['asha']['reduction_factor']}")
    print(f"\nGrid ({len(grid.trials)} points, run order):\n\n{trials_table(grid)}")
    print(f"\nSearch ({len(search.trials)} trials, completion order):\n\n{trials_table(search)}")
    print(f"\nSummary:\n\n{summary_table(summary)}")
    repeats = summary["repeat_check"]
    print(f"\nSearch trials against the grid's run of the same settings: {repeats['epochs_compared']} epochs compared, "
          f"largest val_acc difference {_number(repeats['max_abs_val_acc_difference'], 2)} points.")
    machine = record["machine"]
    print(f"Load average (1, 5, 15 min) at start {machine['load_average_start']}, at end {machine['load_average_end']}; "
          f"{machine['cpus']} CPUs.")
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2, default=str))
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
