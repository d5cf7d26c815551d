"""Build the Ray Train ``TorchTrainer`` of one training run and its datasets."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.train
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from merdg.config import ConfigError, JobConfig, MERConfig
from merdg.data.cache_sets import read_decoded
from merdg.training.balanced import BalancedPlan, balanced_part_name, plan_balanced_batches
from merdg.training.loop import EVAL_SETS, eval_dataset_name, train_loop_per_worker
from merdg.training.model_diagnostics import DOMAIN_INDEX_COLUMN

logger = logging.getLogger(__name__)

DATA_CPU_RESERVE = 1.0
"""CPUs left free for Ray Data tasks while training workers run."""


@dataclass(frozen=True)
class WorkerResources:
    """Resources of one training worker and of a whole trial (its workers plus its driver)."""

    cpus_per_worker: float
    gpus_per_worker: float
    trial_driver_cpus: float = 0.01

    def per_trial_cpus(self, num_workers: int) -> float:
        return self.trial_driver_cpus + num_workers * self.cpus_per_worker


def size_workers(job: JobConfig, cluster_cpus: float) -> WorkerResources:
    """Choose worker resources so that training cannot starve the Ray Data tasks it reads from.

    CPU workers share what is left after ``DATA_CPU_RESERVE`` CPUs, at most 1 CPU each and at
    least 0.25; on 2 CPUs with 2 workers that gives 0.5 CPU per worker. GPU workers take one GPU
    and one CPU each. ``--train.cpus_per_worker`` overrides the CPU share.
    """
    train = job.train
    if train.cpus_per_worker is not None:
        cpus = train.cpus_per_worker
    elif train.use_gpu:
        cpus = 1.0
    else:
        cpus = min(1.0, max(0.25, (cluster_cpus - DATA_CPU_RESERVE) / train.num_workers))
    return WorkerResources(cpus_per_worker=cpus, gpus_per_worker=1.0 if train.use_gpu else 0.0)


def check_feasible(job: JobConfig, resources: WorkerResources, cluster: dict[str, float], *, fixed: bool) -> None:
    """Raise ``ConfigError`` when one trial's workers can never be placed on ``cluster``.

    Ray waits forever for an infeasible request, so a job on a cluster that cannot grow
    (``fixed``, a local instance) is checked before it starts. An autoscaling cluster may add the
    resources later, so there a shortfall is only logged.
    """
    problems = []
    gpus_needed = resources.gpus_per_worker * job.train.num_workers
    if gpus_needed > cluster.get("GPU", 0.0):
        problems.append(f"{gpus_needed:g} GPUs for --train.use_gpu with {job.train.num_workers} workers, "
                        f"but the cluster has {cluster.get('GPU', 0.0):g}")
    cpus_needed = resources.per_trial_cpus(job.train.num_workers)
    if cpus_needed > cluster.get("CPU", 0.0):
        problems.append(f"{cpus_needed:g} CPUs per trial ({job.train.num_workers} workers x "
                        f"{resources.cpus_per_worker:g} --train.cpus_per_worker), but the cluster has "
                        f"{cluster.get('CPU', 0.0):g}")
    if not problems:
        return
    message = "; ".join(problems)
    if fixed:
        raise ConfigError(f"the training workers do not fit this machine: {message}. Lower --train.num_workers "
                          "or --train.cpus_per_worker, or set --train.use_gpu false")
    logger.warning("the training workers do not fit the cluster's current resources (%s); "
                   "trials wait until the autoscaler adds nodes", message)


def max_concurrent_trials(job: JobConfig, resources: WorkerResources, cluster_cpus: float) -> int:
    """Return how many trials may run at once without taking the CPUs reserved for Ray Data."""
    per_trial = resources.per_trial_cpus(job.train.num_workers)
    fitting = max(1, int((cluster_cpus - DATA_CPU_RESERVE * 0.5) // per_trial))
    if job.tune.max_concurrent_trials > fitting:
        logger.warning(
            "--tune.max_concurrent_trials=%d does not fit %.1f CPUs (%.2f CPUs per trial); running %d at a time",
            job.tune.max_concurrent_trials, cluster_cpus, per_trial, fitting,
        )
    return min(job.tune.max_concurrent_trials, fitting)


def split_exactly(dataset: ray.data.Dataset, num_parts: int) -> list[ray.data.Dataset]:
    """Split a dataset into ``num_parts`` contiguous parts whose sizes differ by at most one row.

    In Ray 2.60, ``Dataset.split(equal=False)`` splits at block boundaries, so one small cached
    block goes to one worker, and ``equal=True`` drops rows. Evaluation needs every row once.
    """
    materialized = dataset.materialize()
    count = materialized.count()
    sizes = [count // num_parts + (1 if part < count % num_parts else 0) for part in range(num_parts)]
    indices = [sum(sizes[: part + 1]) for part in range(num_parts - 1)]
    return materialized.split_at_indices(indices) if indices else [materialized]


def domain_indices(table: pa.Table, domains: Sequence[str]) -> pa.Array:
    """Return the index of each row's domain in ``domains`` (int64), a Ray Data ``add_column`` function."""
    return pc.index_in(table["domain"], value_set=pa.array(list(domains), type=pa.string())).cast(pa.int64())


def build_datasets(cache_path: Path, sources: Sequence[str], target: str, job: JobConfig) -> dict[str, ray.data.Dataset]:
    """Return the trainer's datasets, materialized: source train lists and per-worker evaluation parts.

    Training reads the source domains' train lists. Validation reads the source domains' test
    lists. The target's train and test lists are evaluated as two sets, so that the loop can
    report the accuracy on both together and on the test list alone. Each evaluation set is split
    into one exact part per worker ('val_0', 'val_1', ...); only 'train' is split by Ray.
    With ``--train.balanced_batches`` and two or more sources, each source domain's train list is
    instead split into one exact part per worker (see ``merdg.training.balanced``), and there is
    no 'train' dataset. With one source every batch is balanced anyway, so 'train' is kept.
    Evaluation rows also carry ``DOMAIN_INDEX_COLUMN``, the index of their domain in
    ``[*sources, target]``, for the domain probe of the diagnostics.
    """
    columns = [*job.data.modalities, "label"]
    # Ray Data tasks join only the trained modalities' per-modality caches into rows.
    read = functools.partial(read_decoded, cache_path, modalities=job.data.modalities)
    add_domain_index = functools.partial(domain_indices, domains=[*sources, target])

    def read_evaluation(domains: list[str], split: str) -> ray.data.Dataset:
        rows = read(domains=domains, splits=[split])
        return rows.add_column(DOMAIN_INDEX_COLUMN, add_domain_index, batch_format="pyarrow").select_columns(
            [*columns, DOMAIN_INDEX_COLUMN])

    train = read(domains=list(sources), splits=["train"]).select_columns(columns)
    validation = read_evaluation(list(sources), "test")
    target_train = read_evaluation([target], "train")
    target_test = read_evaluation([target], "test")
    # Split lists are often sorted by class, and workers shuffle only within a small buffer of
    # rows, so the rows are shuffled globally once here.
    # NOTE: every epoch then reads the same global order up to that buffer's local reshuffling.
    if job.train.balanced_batches and len(sources) >= 2:
        datasets = _balanced_train_parts(read, columns, sources, target, job)
    else:
        datasets = {"train": train.random_shuffle(seed=job.train.seed).materialize()}
    evaluation = dict(zip(EVAL_SETS, (validation, target_train, target_test), strict=True))
    for split, dataset in evaluation.items():
        for rank, part in enumerate(split_exactly(dataset, job.train.num_workers)):
            datasets[eval_dataset_name(split, rank)] = part
    # The target's train list may be empty, but its test list may not, because target_test_acc needs it.
    training = [name for name in datasets if name == "train" or name.startswith("train_domain")]
    required = (*training, eval_dataset_name("val", 0), eval_dataset_name("target_test", 0))
    empty = [name for name in required if datasets[name].count() == 0]
    if empty:
        raise ValueError(
            f"no rows for {empty} with target {target!r} and sources {list(sources)} in the decode cache {cache_path}; "
            "check --data.domains and the split lists"
        )
    return datasets


def _balanced_train_parts(read: Callable[..., ray.data.Dataset], columns: list[str], sources: Sequence[str],
                          target: str, job: JobConfig) -> dict[str, ray.data.Dataset]:
    """Return each source domain's shuffled train list split into one exact part per worker.

    Raises:
        ConfigError: a worker's batch cannot hold equal counts of every source domain, or a
            worker's part of a domain cannot fill one balanced batch.
    """
    workers = job.train.num_workers
    parts = {}
    for index, domain in enumerate(sources):
        rows = read(domains=[domain], splits=["train"]).select_columns(columns)
        # Shuffled once like the unbalanced 'train' set. Each epoch then keeps a fresh random subset of it.
        shuffled = rows.random_shuffle(seed=job.train.seed + index)
        for rank, part in enumerate(split_exactly(shuffled, workers)):
            parts[balanced_part_name(index, rank)] = part
    sizes = [[parts[balanced_part_name(index, rank)].count() for index in range(len(sources))]
             for rank in range(workers)]
    if any(sum(column) == 0 for column in zip(*sizes)):
        return parts  # build_datasets reports the source domain without training rows.
    try:
        plan_balanced_batches(sizes, job.train.batch_size // workers, sources)
    except ValueError as error:
        raise ConfigError(
            f"invalid --train.batch_size {job.train.batch_size} with {workers} workers and "
            f"--train.balanced_batches true, for target {target!r}: {error}. Choose a batch size that is a "
            f"multiple of {workers * len(sources)} and small enough, or set --train.balanced_batches false"
        ) from error
    return parts


def balanced_plan(datasets: Mapping[str, ray.data.Dataset], job: JobConfig) -> BalancedPlan | None:
    """Return the balanced-batch plan of datasets from ``build_datasets``, or None when they have a 'train' set."""
    if "train" in datasets:
        return None
    workers = job.train.num_workers
    num_domains = sum(1 for name in datasets if name.startswith("train_domain") and name.endswith("_0"))
    sizes = [[datasets[balanced_part_name(index, rank)].count() for index in range(num_domains)]
             for rank in range(workers)]
    return plan_balanced_batches(sizes, job.train.batch_size // workers)


def build_trainer(
    job: JobConfig,
    mer: MERConfig,
    datasets: dict[str, ray.data.Dataset],
    num_classes: int,
    resources: WorkerResources,
    *,
    name: str,
    storage_path: Path,
    callbacks: Sequence[ray.train.UserCallback] = (),
    keep_all_checkpoints: bool = False,
) -> TorchTrainer:
    """Return a ``TorchTrainer`` running ``train_loop_per_worker`` with DDP (gloo on CPU, NCCL on GPU).

    Only the 'train' dataset, when there is one, is split by Ray; checkpoints keep the epoch with
    the best source validation accuracy. ``keep_all_checkpoints`` keeps every epoch's instead: Ray
    Train 2.60's ``Result.metrics_dataframe`` has a row only for each retained checkpoint.

    A worker that dies or raises stops every worker of the run, and Ray Train starts them again
    (at most ``--train.max_failures`` times). They resume from the latest checkpoint, which Ray
    keeps besides the best one, so the run goes on after the last epoch it reported.
    """
    worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        worker["GPU"] = resources.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job, "mer": mer, "num_classes": num_classes,
                           "balanced": balanced_plan(datasets, job)},
        scaling_config=ScalingConfig(
            num_workers=job.train.num_workers, use_gpu=job.train.use_gpu, resources_per_worker=worker
        ),
        torch_config=TorchConfig(backend="nccl" if job.train.use_gpu else "gloo"),
        dataset_config=DataConfig(datasets_to_split=["train"] if "train" in datasets else []),
        datasets=datasets,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            checkpoint_config=CheckpointConfig(
                num_to_keep=None if keep_all_checkpoints else 1, checkpoint_score_attribute="val_acc",
                checkpoint_score_order="max"
            ),
            # NOTE: Ray Train 2.60 restarts on every worker error alike, so a deterministic one (an invalid
            # batch size, a non-finite loss) also runs max_failures + 1 times before the run fails.
            failure_config=FailureConfig(max_failures=job.train.max_failures),
            callbacks=list(callbacks),
            # Per-report INFO lines from every worker would flood the console of a sweep.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
