"""The Ray Train worker loop: one DDP process of one training run.

Each worker reads its shard of the cached training set and computes the host method's loss
terms plus MER's. After every epoch it evaluates its own part of each evaluation set: the source
domains' test lists, the target's train list and the target's test list. Correct counts are
summed over workers, so every worker reports the same accuracies: ``val_acc`` (source test
lists), ``target_acc`` (the target's train and test lists together, as the HAC peers evaluate)
and ``target_test_acc`` (the target's test list alone, as the EPIC peers evaluate).

With domain-balanced batches a worker reads its parts of each source domain instead
(``merdg.training.balanced``), and every batch is full. A streamed last batch with fewer rows
than the host method needs (``HostMethod.min_batch_size``: 2 for BatchNorm heads and contrastive
terms) is skipped. Ray's equal split gives every worker the same rows, so all workers skip it.

After the last epoch, with ``--train.diagnostics true``, the workers also measure the trained
model (``merdg.training.model_diagnostics``) and report the ``diag_*`` metrics with that
epoch's accuracies.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from merdg.config import ConfigError, DataConfig, JobConfig, MERConfig
from merdg.data.transforms import prepare_inputs
from merdg.entropy import build_estimator
from merdg.methods import HostMethod, build_method
from merdg.models import MultimodalModel
from merdg.optim import build_optimizer
from merdg.regularizer import MERRegularizer
from merdg.training.balanced import BalancedPlan, balanced_part_name, iter_balanced_batches
from merdg.training.model_diagnostics import DiagnosticsCollector, gather_diagnostics

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"

EVAL_SETS = ("val", "target_train", "target_test")
"""Evaluation sets: the source domains' test lists, the target's train list, the target's test list."""


def eval_dataset_name(split: str, rank: int) -> str:
    """Name of a worker's part of an evaluation set (one of ``EVAL_SETS``) among the trainer's datasets."""
    return f"{split}_{rank}"


def accuracy_metrics(counts: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Turn summed (correct, count) pairs of ``EVAL_SETS`` into the reported accuracies (%) and counts.

    ``target_acc`` pools the target's train and test lists, ``target_test_acc`` uses its test list
    alone. An empty set reports an accuracy of 0.
    """
    val_correct, val_count = counts["val"]
    test_correct, test_count = counts["target_test"]
    target_correct = counts["target_train"][0] + test_correct
    target_count = counts["target_train"][1] + test_count
    return {
        "val_acc": 100.0 * val_correct / max(val_count, 1.0),
        "target_acc": 100.0 * target_correct / max(target_count, 1.0),
        "target_test_acc": 100.0 * test_correct / max(test_count, 1.0),
        "val_count": val_count,
        "target_count": target_count,
        "target_test_count": test_count,
    }


TARGET_CONFUSION = "target_confusion"
"""Reported each epoch: the confusion matrix of the target's train and test lists together, as JSON text."""


def confusion_text(values: list[float], num_classes: int) -> str:
    """Format flat summed counts as a JSON matrix, rows the true classes and columns the predicted ones."""
    rows = [[int(values[row * num_classes + column]) for column in range(num_classes)] for row in range(num_classes)]
    return json.dumps(rows)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


@torch.no_grad()
def _evaluate(model: MultimodalModel, split: str, rank: int, data: DataConfig, batch_size: int,
              device: torch.device, collector: DiagnosticsCollector | None = None,
              confusion: torch.Tensor | None = None) -> tuple[float, float]:
    """Return (correct, count) of the worker's part of an evaluation set (one of ``EVAL_SETS``).

    A ``collector`` also receives every batch, for the diagnostics of the last epoch, and
    ``confusion`` (true class by predicted class) is incremented in place when given.
    """
    shard = ray.train.get_dataset_shard(eval_dataset_name(split, rank))
    model.eval()
    correct = 0.0
    count = 0.0
    for batch in shard.iter_torch_batches(batch_size=batch_size, device=device):
        inputs = prepare_inputs(batch, data.modalities, data, train=False)
        output = model(inputs)
        predictions = output.logits.argmax(dim=1)
        if confusion is not None:
            flat = batch["label"].long() * confusion.shape[1] + predictions.long()
            confusion += torch.bincount(flat, minlength=confusion.numel()).view_as(confusion).to(confusion)
        correct += float((predictions == batch["label"]).sum())
        count += float(batch["label"].numel())
        if collector is not None:
            collector.add(split, batch, inputs, output, model)
    return correct, count


def _report_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                     metrics: dict[str, float], rank: int) -> None:
    """Report the epoch's metrics; rank 0 attaches a checkpoint of the model and optimizer."""
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "metrics": metrics},
            Path(folder) / CHECKPOINT_FILE,
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _report_restored_last_epoch() -> None:
    """Report the metrics stored with the checkpoint of a run restored after its last epoch.

    Such a run trains no more, but its caller (a Ray Tune trial run again after a restore)
    needs a final report with the run's metrics. Readers keep one row per epoch, the latest.
    """
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    if state.get("metrics"):
        ray.train.report(dict(state["metrics"]))


def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load the latest checkpoint when Ray Train restarts a run; return the number of epochs it finished.

    Training goes on with the next epoch, so a restart reports none of the finished epochs again.
    That matters because Ray Tune appends a repeated report to the trial's metric history as a new
    row, with its own training_iteration, which would put the epoch into the history twice and
    shift ASHA's rungs.
    NOTE: the augmentation generators start again from their seeds, so the clips after a restart
    are augmented differently than in an uninterrupted run.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    # A restart follows a failure, so it is logged where the default WARNING level shows it.
    logger.warning("restarted: resuming after epoch %d from the checkpoint at %s", state["epoch"], checkpoint.path)
    return int(state["epoch"])


def build_training(job: JobConfig, mer: MERConfig, num_classes: int,
                   ) -> tuple[MultimodalModel, HostMethod, MERRegularizer | None]:
    """Build the host method, the model with the method's modules, and MER's regularizer (None when lambda is 0).

    MER's per-modality weights apply to every feature set of the modality (SimMMDG has two).
    """
    modalities = job.data.modalities
    method = build_method(job.train.method, modalities, job.methods, mer_enabled=mer.enabled)
    model = MultimodalModel(modalities, num_classes, job.model, with_projectors=method.uses_projectors, method=method)
    regularizer = None
    if mer.enabled:
        estimator = build_estimator(mer.estimator, **mer.estimator_params)
        feature_weights = {name: mer.modality_weights.get(modality, 1.0)
                           for name, modality in method.entropy_feature_modalities().items()}
        regularizer = MERRegularizer(estimator, mer.weight, feature_weights, normalize=mer.normalize, scope=mer.scope)
    return model, method, regularizer


def train_step(model: torch.nn.Module, method: HostMethod, regularizer: MERRegularizer | None,
               optimizer: torch.optim.Optimizer, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
               ) -> dict[str, float]:
    """Take one optimizer step and return the loss ('loss') and its named terms as floats.

    ``model`` may be the DDP wrapper of a ``MultimodalModel``. MER's terms are named 'mer_<feature
    set>' and 'mer_total'.

    Raises:
        FloatingPointError: the loss is not finite.
    """
    output = model(inputs)
    terms = method.loss_terms(output, labels)
    loss = torch.stack(list(terms.values())).sum()
    if regularizer is not None:
        mer_terms = regularizer(method.entropy_features(output))
        loss = loss + mer_terms.total
        terms.update({f"mer_{name}": value for name, value in mer_terms.per_modality.items()})
        terms["mer_total"] = mer_terms.total
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"non-finite training loss {loss.item()} (terms: { {name: float(value) for name, value in terms.items()} }); "
            "lower --train.lr or lambda, or check the input data for NaN values"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    method.after_optimizer_step(getattr(model, "module", model))
    values = {"loss": float(loss.detach())}
    values.update({name: float(value.detach()) for name, value in terms.items()})
    return values


def mean_train_metrics(sums: dict[str, float], num_batches: int, device: torch.device) -> dict[str, float]:
    """Average per-batch sums over every worker's batches, as 'train_<name>' metrics.

    Every worker must call it with the same names, because it all-reduces under DDP.
    """
    names = sorted(sums)
    totals = _all_reduce_sum([sums[name] for name in names] + [float(num_batches)], device)
    return {f"train_{name}": total / max(totals[-1], 1.0) for name, total in zip(names, totals[:-1])}


def _training_batches(config: dict[str, Any], epoch: int, rank: int, world_size: int, batch_size: int,
                      device: torch.device):
    """Return the iterator of one epoch's training batches of this worker: balanced or streamed."""
    seed = config["job"].train.seed * 100003 + epoch * world_size + rank
    plan: BalancedPlan | None = config.get("balanced")
    if plan is None:
        return ray.train.get_dataset_shard("train").iter_torch_batches(
            batch_size=batch_size, local_shuffle_buffer_size=4 * batch_size, local_shuffle_seed=seed,
            device=device,
        )
    shards = [ray.train.get_dataset_shard(balanced_part_name(index, rank)) for index in range(plan.num_domains)]
    return iter_balanced_batches(shards, plan, rank, seed=seed, shuffle_buffer_rows=2 * plan.batch_size,
                                 device=device)


def _quiet_worker_logs() -> None:
    """Keep per-epoch INFO lines of Ray Train and Ray Data out of the sweep's console."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # NOTE: Ray 2.60 logs every ray.train.report at INFO under a logger named after the file
    # path of its context module, outside the "ray.train" hierarchy that LoggingConfig sets.
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train one configuration.

    ``config`` has the keys 'job' (JobConfig), 'mer' (MERConfig), 'num_classes' and 'balanced'
    (a ``BalancedPlan``, or None to stream the 'train' dataset).
    """
    _quiet_worker_logs()
    job: JobConfig = config["job"]
    mer: MERConfig = config["mer"]
    num_classes: int = config["num_classes"]
    modalities = job.data.modalities
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    torch.manual_seed(job.train.seed)
    model, method, regularizer = build_training(job, mer, num_classes)
    batch_size = job.train.batch_size // world_size
    if batch_size < method.min_batch_size:
        raise ConfigError(
            f"invalid --train.batch_size: host method {method.name!r} needs at least {method.min_batch_size} rows per "
            f"worker, but {job.train.batch_size} over {world_size} workers gives {batch_size}; raise --train.batch_size"
        )
    model = ray.train.torch.prepare_model(model)
    module: MultimodalModel = getattr(model, "module", model)
    optimizer = build_optimizer(module, job.train)
    start_epoch = _restore(module, optimizer)
    if start_epoch >= job.train.epochs:
        _report_restored_last_epoch()

    augment_generator = torch.Generator().manual_seed(job.train.seed * 1009 + rank)
    for epoch in range(start_epoch, job.train.epochs):
        started = time.perf_counter()
        model.train()
        sums: dict[str, float] = defaultdict(float)
        num_batches = 0
        for batch in _training_batches(config, epoch, rank, world_size, batch_size, device):
            if len(batch["label"]) < method.min_batch_size:
                continue
            inputs = prepare_inputs(batch, modalities, job.data, train=True, generator=augment_generator)
            try:
                values = train_step(model, method, regularizer, optimizer, inputs, batch["label"])
            except FloatingPointError as error:
                raise FloatingPointError(f"epoch {epoch + 1}, batch {num_batches + 1}: {error}") from error
            for name, value in values.items():
                sums[name] += value
            num_batches += 1

        if num_batches == 0:
            raise ConfigError(
                f"invalid --train.num_workers: worker {rank} of {world_size} had no training batch of "
                f"{method.min_batch_size} rows or more in epoch {epoch + 1}, because its share of the training "
                "clips is too small; lower --train.num_workers or add training clips"
            )
        metrics = mean_train_metrics(sums, num_batches, device)
        collector = None
        if job.train.diagnostics and epoch + 1 == job.train.epochs:
            collector = DiagnosticsCollector(modalities, job.train.diagnostics_noise_std,
                                             seed=job.train.seed * 7919 + rank)
        evaluation = []
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
        for split in EVAL_SETS:
            target_confusion = confusion if split.startswith("target") else None
            evaluation.extend(_evaluate(module, split, rank, job.data, batch_size, device, collector,
                                        target_confusion))
        totals = _all_reduce_sum(evaluation + confusion.flatten().tolist(), device)
        counts = {split: (totals[2 * index], totals[2 * index + 1]) for index, split in enumerate(EVAL_SETS)}
        metrics.update(accuracy_metrics(counts))
        metrics[TARGET_CONFUSION] = confusion_text(totals[2 * len(EVAL_SETS):], num_classes)
        if collector is not None:
            metrics.update(gather_diagnostics(collector, module.head, num_classes, rank=rank, seed=job.train.seed))
        epoch_time_s = time.perf_counter() - started - metrics.get("diag_time_s", 0.0)
        metrics.update(epoch=epoch + 1, epoch_time_s=epoch_time_s)
        _report_epoch(module, optimizer, epoch + 1, metrics, rank)
