"""The main job: decode the dataset once, then search MER's settings for every target domain."""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections import Counter
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.data
import yaml

from merdg.config import ConfigError, JobConfig
from merdg.data.clips import DatasetError
from merdg.data.datasets import DatasetInfo, load_dataset
from merdg.data.pipeline import DecodeCacheResult, build_decode_cache
from merdg.entropy import ESTIMATORS, build_estimator
from merdg.methods import HOST_METHODS, build_method
from merdg.selection import SELECTION_METHODS
from merdg.tracking import UNLOGGED_FILE, Tracker, default_tracking_uri
from merdg.training.trainer import check_feasible, max_concurrent_trials, size_workers
from merdg.tuning.plots import confusion_figure, lambda_figure, per_class_figure
from merdg.tuning.results import CELL_RESULT_FILE, CellResult, mean_std, results_csv, results_markdown, summary_metrics
from merdg.tuning.space import load_space
from merdg.tuning.sweep import CellPlan, CellRunner, plan_cells

logger = logging.getLogger(__name__)

RAY_DATA_LOGGING_CONFIG = Path(__file__).with_name("ray_data_logging.yaml")
"""Ray Data's logging config for local runs: its console output at WARNING."""
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
"""Ray Train's switch for its preemption watcher, off on a local Ray instance."""
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
"""Seconds between Ray Train's polls of its workers (2.0 by default in Ray 2.60), 0.5 on a local instance."""


@dataclass
class JobResult:
    """Output of a finished job: per-target results, the tables, and their MLflow location."""

    results: list[CellResult]
    selection_label: str
    markdown: str
    csv: str
    sweep_id: str
    sweep_run_id: str
    tracking_uri: str
    data: DecodeCacheResult
    experiment: str = ""

    @property
    def mean_target_acc(self) -> float:
        """Mean over cells of MER's seed-mean accuracy on each target's train and test lists together."""
        return mean_over(self.results, "target_acc")

    @property
    def mean_target_test_acc(self) -> float:
        """Mean over cells of MER's seed-mean accuracy on each target's test list alone."""
        return mean_over(self.results, "target_test_acc")


def check_ray_address(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast when a 'host:port' Ray address refuses connections (``ray.init`` retries for minutes)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # 'auto', 'local' or another form that Ray resolves itself.
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        raise ConfigError(
            f"invalid --ray_address: no Ray cluster responds at {address} ({error.strerror or error}); start the cluster "
            "(ray start --head, or ray up cluster.yaml) or omit --ray_address to run on a local Ray instance"
        ) from error


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def init_ray(address: str | None) -> None:
    """Connect to the Ray cluster at ``address``, or start a local instance bound to 127.0.0.1."""
    if ray.is_initialized():
        return
    if address:
        check_ray_address(address)
        ray.init(address=address)
        return
    # A local Ray node listens on all interfaces unless this is set before it starts.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Every local Ray process reads Ray Data's logging config from this file at start.
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING_CONFIG))
    # Ray Train's placement-group cleaner finds its cluster through the state API. That fails
    # with "Found multiple active Ray instances" when another local Ray runs on the machine, and
    # then a trial that ASHA stops keeps its CPUs, so later trials wait forever. The GCS port is
    # chosen here so that every worker can be given the cluster's address.
    gcs_port = _free_port()
    os.environ["RAY_GCS_SERVER_PORT"] = str(gcs_port)
    # A local node is never preempted. Ray Train's preemption watcher would still start one more
    # actor per training run, a process start that costs seconds on a laptop, and log an error
    # line at its start.
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    # Ray Train's controller notices a report, a finished worker group or a failure only at its next
    # poll. Polling every 0.5 s costs little CPU with a few local workers and saves seconds per run.
    os.environ.setdefault(HEALTH_CHECK_ENV, "0.5")
    env_vars = {
        "RAY_DATA_LOGGING_CONFIG": os.environ["RAY_DATA_LOGGING_CONFIG"],
        "RAY_ADDRESS": f"127.0.0.1:{gcs_port}",
        PREEMPTION_WATCHER_ENV: os.environ[PREEMPTION_WATCHER_ENV],
        HEALTH_CHECK_ENV: os.environ[HEALTH_CHECK_ENV],
    }
    ray.init(dashboard_host="127.0.0.1", configure_logging=False, runtime_env={"env_vars": env_vars})


def quiet_ray_data() -> None:
    """Turn off Ray Data's per-dataset progress bars; the job logs its own progress per target."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def experiment_name(job: JobConfig, sweep_id: str) -> str:
    """Return the MLflow experiment name of one sweep: ``--tracking.experiment`` followed by the sweep's id."""
    return f"{job.tracking.experiment}-{sweep_id}"


def open_tracker(job: JobConfig, sweep_id: str) -> Tracker:
    """Open (and if needed create) the sweep's MLflow experiment; fails before any work if unreachable."""
    experiment = experiment_name(job, sweep_id)
    unlogged = job.output_dir / UNLOGGED_FILE
    if job.tracking.tracking_uri:
        # A tracking server decides where artifacts go (for example its --artifacts-destination).
        return Tracker(job.tracking.tracking_uri, experiment, unlogged_path=unlogged)
    return Tracker(default_tracking_uri(job.output_dir), experiment, artifact_location=job.output_dir / "mlartifacts",
                   unlogged_path=unlogged)


def _log_data(tracker: Tracker, run_id: str, info: DatasetInfo, data: DecodeCacheResult) -> None:
    metrics = {
        "data_clips": data.num_clips,
        "data_decoded_clips": data.num_decoded,
        "data_skipped_clips": data.num_skipped,
    }
    for modality, cache in data.modalities.items():
        metrics[f"data_decoded_clips_{modality}"] = cache.num_decoded
        metrics[f"data_reused_clips_{modality}"] = cache.num_reused
    tracker.log_metrics(run_id, metrics)
    params = {"dataset_root": str(info.root), "decode_cache": str(data.path)}
    params.update({f"decode_cache_{modality}": str(cache.path) for modality, cache in data.modalities.items()})
    tracker.log_params(run_id, params)
    if data.quarantine_csv is not None:
        tracker.log_artifact(run_id, data.quarantine_csv, "data")


def format_counts(counts: dict[str, int]) -> str:
    """Format clip counts by modality as 'video 0, audio 300'."""
    return ", ".join(f"{modality} {count}" for modality, count in counts.items())


def validate_job(job: JobConfig) -> None:
    """Check the names the job refers to (host method, selection, estimator) before any work."""
    if job.train.method not in HOST_METHODS:
        raise ConfigError(f"invalid --train.method: {job.train.method!r}; registered: {sorted(HOST_METHODS)}")
    # Building the method checks it against the modalities (most methods need two or more), so a
    # mismatch stops the job here rather than in the first trial, after decoding.
    build_method(job.train.method, job.data.modalities, job.methods, mer_enabled=job.mer.weight > 0)
    if job.tune.selection not in SELECTION_METHODS:
        raise ConfigError(f"invalid --tune.selection: {job.tune.selection!r}; registered: {sorted(SELECTION_METHODS)}")
    if job.mer.estimator not in ESTIMATORS:
        raise ConfigError(f"invalid --mer.estimator: {job.mer.estimator!r}; registered: {sorted(ESTIMATORS)}")
    try:
        build_estimator(job.mer.estimator, **job.mer.estimator_params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid --mer.estimator_params {job.mer.estimator_params}: {error}") from error


def make_folder(path: Path, flag: str) -> None:
    """Create an output folder, or raise ``ConfigError`` naming the flag when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"invalid --{flag}: cannot create the folder {path}: {error.strerror or error}") from error


def check_splits(info: DatasetInfo, plans: list[tuple[str, tuple[str, ...]]]) -> None:
    """Raise ``DatasetError`` when a target's training, validation or target test set has no clips.

    The target's train list may be empty, but its test list may not, because ``target_test_acc``
    is measured on it.
    """
    counts = Counter((clip.domain, clip.split) for clip in info.clips)
    for target, sources in plans:
        needed = {
            "training (source train lists)": sum(counts[(d, "train")] for d in sources),
            "validation (source test lists)": sum(counts[(d, "test")] for d in sources),
            f"target {target!r} (its test list)": counts[(target, "test")],
        }
        empty = [name for name, count in needed.items() if count == 0]
        if empty:
            raise DatasetError(
                f"no clips for the {' and the '.join(empty)} of target {target!r} with sources {list(sources)} "
                f"in {info.root}; check the split files and --data.domains"
            )


def open_cell_run(job: JobConfig, tracker: Tracker, plan: CellPlan, sweep_run_id: str) -> tuple[str, CellResult | None]:
    """Return the MLflow run of a cell, and its stored result when an earlier run of the sweep finished it.

    A cell run left unfinished by an interruption is reopened. Before its trials resume, the runs
    under it that were still RUNNING are marked FAILED (tagged ``merdg.interrupted``).
    """
    cell = plan.cell
    existing = tracker.find_run({"merdg.cell_id": plan.cell_id}) if job.tune.resume else None
    if existing is not None:
        run_id = existing.info.run_id
        stored = tracker.load_json(run_id, CELL_RESULT_FILE)
        if existing.info.status == "FINISHED" and stored is not None:
            return run_id, CellResult.from_dict(stored)
        closed = tracker.fail_running_children(run_id)
        logger.info("%s: resuming its unfinished run %s (%d interrupted trial run(s) marked FAILED)",
                    cell.name, run_id, closed)
        tracker.reopen_run(run_id)
        return run_id, None
    run_id = tracker.start_run(cell.name, parent_run_id=sweep_run_id, tags={
        "merdg.cell_id": plan.cell_id, "merdg.protocol": cell.protocol, "merdg.target": cell.target,
        "merdg.sources": ",".join(cell.sources), "merdg.modalities": "+".join(cell.modalities),
        "merdg.method": cell.method, "merdg.selection": SELECTION_METHODS[job.tune.selection].label,
    })
    tracker.log_params(run_id, {"protocol": cell.protocol, "target": cell.target, "sources": ",".join(cell.sources),
                                "modalities": "+".join(cell.modalities), "method": cell.method,
                                "num_trials": job.tune.num_trials, "seeds": job.tune.seeds,
                                "selection": job.tune.selection})
    return run_id, None


def _mark_selected_trial(tracker: Tracker, parent_run_id: str, trial_id: str) -> None:
    """Tag the MLflow run of the selected search trial (Tune names the run after the trial)."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    for run in runs:
        if run.data.tags.get("merdg.phase") == "search" and run.data.tags.get("trial_name", "").endswith(trial_id):
            tracker.set_tags(run.info.run_id, {"merdg.selected": "true"})


def run_cell(job: JobConfig, plan: CellPlan, space, tracker: Tracker, sweep_run_id: str,
             class_names: tuple[str, ...] = ()) -> CellResult:
    """Search, retrain and record one cell, or read its result back when it already finished."""
    run_id, stored = open_cell_run(job, tracker, plan, sweep_run_id)
    if stored is not None:
        logger.info("%s: finished in an earlier run of this sweep (MLflow run %s); not rerun", plan.cell.name, run_id)
        return stored
    status = "FAILED"
    try:
        runner = CellRunner(plan.cell.job(job), plan, space, tracker, run_id)
        result = runner.run()
        tracker.log_metrics(run_id, summary_metrics(result))
        tracker.log_params(run_id, {"selected": result.mer.params})
        _mark_selected_trial(tracker, run_id, max(result.trials, key=lambda t: t.score).trial_id)
        figures = {"plots/lambda_vs_accuracy.png": lambda_figure(result),
                   "plots/confusion.png": confusion_figure(result, class_names),
                   "plots/per_class_accuracy.png": per_class_figure(result, class_names)}
        for artifact_file, figure in figures.items():
            if figure is not None:
                tracker.log_figure(run_id, figure, artifact_file)
        tracker.log_dict(run_id, result.to_dict(), CELL_RESULT_FILE)
        status = "FINISHED"
    finally:
        tracker.end_run(run_id, status)
    return result


def sweep_identity(job: JobConfig) -> str:
    """The sweep's id: the resolved config's fingerprint, plus the start time when it must not resume."""
    fingerprint = job.fingerprint()
    return fingerprint if job.tune.resume else f"{fingerprint}-{time.strftime('%Y%m%d-%H%M%S')}"


def open_sweep_run(job: JobConfig, tracker: Tracker, sweep_id: str, info: DatasetInfo, selection_label: str) -> str:
    """Return the sweep's MLflow run, reopening it when the same sweep ran before."""
    existing = tracker.find_run({"merdg.sweep_id": sweep_id}) if job.tune.resume else None
    if existing is not None:
        tracker.reopen_run(existing.info.run_id)
        logger.info("continuing sweep %s (MLflow run %s)", sweep_id, existing.info.run_id)
        return existing.info.run_id
    run_id = tracker.start_run(f"sweep-{sweep_id}", tags={"merdg.sweep_id": sweep_id, "merdg.selection": selection_label,
                                                         "merdg.dataset": info.name})
    tracker.log_params(run_id, job.to_dict())
    tracker.log_text(run_id, yaml.safe_dump(job.to_dict(), sort_keys=False), "config.yaml")
    return run_id


def sweep_title(job: JobConfig, dataset: str) -> str:
    return (f"MER-DG on {dataset}: protocols {', '.join(job.tune.protocols)}; modality sets "
            f"{', '.join('+'.join(m) for m in job.modality_sets)}; hosts {', '.join(job.host_methods)}")


def run_job(job: JobConfig) -> JobResult:
    """Run the whole sweep described by ``job`` and return its results tables."""
    started = time.perf_counter()
    validate_job(job)
    make_folder(job.output_dir, "output_dir")
    make_folder(job.data.cache_dir, "data.cache_dir")
    space = load_space(job.tune.space)
    sweep_id = sweep_identity(job)
    tracker = open_tracker(job, sweep_id)
    info = load_dataset(job.data)
    cells = plan_cells(job, info.domains)
    pairs = list(dict.fromkeys((cell.target, cell.sources) for cell in cells))
    check_splits(info, pairs)
    selection_label = SELECTION_METHODS[job.tune.selection].label

    init_ray(job.ray_address)
    quiet_ray_data()
    cluster = ray.cluster_resources()
    cluster_cpus = float(cluster.get("CPU", 1.0))
    resources = size_workers(job, cluster_cpus)
    check_feasible(job, resources, cluster, fixed=job.ray_address is None)
    concurrency = max_concurrent_trials(job, resources, cluster_cpus)
    data = build_decode_cache(info.clips, job.data)
    logger.info("decode cache %s: %d clips; decoded now: %s; reused: %s; %d skipped",
                data.path, data.num_clips, format_counts(data.decoded_counts), format_counts(data.reused_counts),
                data.num_skipped)
    if data.num_skipped:
        skipped_ids = {item["clip_id"] for item in data.skipped}
        decoded_info = dataclasses.replace(
            info, clips=[clip for clip in info.clips if clip.clip_id not in skipped_ids]
        )
        try:
            check_splits(decoded_info, pairs)
        except DatasetError as error:
            raise DatasetError(
                f"after skipping {data.num_skipped} clip(s) that failed to decode (listed in "
                f"{data.quarantine_csv}): {error}"
            ) from None

    sweep_run_id = open_sweep_run(job, tracker, sweep_id, info, selection_label)
    _log_data(tracker, sweep_run_id, info, data)

    results: list[CellResult] = []
    status = "FAILED"
    try:
        for index, cell in enumerate(cells, start=1):
            logger.info("cell %d/%d: %s; %d search trials, seeds %s%s", index, len(cells), cell.name,
                        job.tune.num_trials, job.tune.seeds, ", with a no-MER baseline" if job.tune.baseline else "")
            plan = CellPlan(cell, data.path, info.num_classes, resources, concurrency, cell.identity(sweep_id))
            result = run_cell(job, plan, space, tracker, sweep_run_id, info.class_names)
            summary = summary_metrics(result)
            logger.info("cell %d/%d done: %s; MER target %.2f%%, baseline %s (%s)", index, len(cells), cell.name,
                        summary.get("mer_target_acc_mean", math.nan),
                        f"{summary['base_target_acc_mean']:.2f}%" if "base_target_acc_mean" in summary else "not run",
                        selection_label)
            results.append(result)
        title = sweep_title(job, info.name)
        markdown = results_markdown(results, selection_label, title)
        table_csv = results_csv(results, selection_label)
        tracker.set_tags(sweep_run_id, {"merdg.title": title})
        tracker.log_text(sweep_run_id, markdown, "results/results.md")
        tracker.log_text(sweep_run_id, table_csv, "results/results.csv")
        tracker.log_metrics(sweep_run_id, {"mean_target_acc": mean_over(results, "target_acc"),
                                           "mean_target_test_acc": mean_over(results, "target_test_acc"),
                                           "wall_time_s": time.perf_counter() - started})
        status = "FINISHED"
    finally:
        tracker.end_run(sweep_run_id, status)
        tracker.report_unlogged()
    return JobResult(results, selection_label, markdown, table_csv, sweep_id, sweep_run_id, tracker.tracking_uri, data,
                     tracker.experiment)


def mean_over(results: list[CellResult], accuracy: str) -> float:
    """Mean over cells of MER's seed-mean accuracy."""
    values = [mean_std(r.mer.values(accuracy))[0] for r in results]
    return sum(values) / len(values) if values else math.nan


def resolve_paths(job: JobConfig, base: Path) -> JobConfig:
    """Make the job's relative paths absolute against ``base`` (Ray workers run elsewhere)."""
    if not job.tune.space.is_absolute():
        job.tune.space = (base / job.tune.space).resolve()
    job.output_dir = job.output_dir.resolve()
    job.data.cache_dir = job.data.cache_dir.resolve()
    if job.data.root is not None:
        job.data.root = job.data.root.resolve()
    if job.data.splits_dir is not None:
        job.data.splits_dir = job.data.splits_dir.resolve()
    return job
