"""The Ray Train worker loop: one DDP process of one training run.

Each worker reads its shard of the cached training set and computes the host method's loss
terms plus MER's. After every epoch it evaluates its own part of each evaluation set: the source
domains' test lists, the target's train list and the target's test list. Correct counts are
summed over workers, so every worker reports the same accuracies: ``val_acc`` (source test
lists), ``target_acc`` (the target's train and test lists together, as the HAC peers evaluate)
and ``target_test_acc`` (the target's test list alone, as the EPIC peers evaluate).
"""

from __future__ import annotations

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

from merdg.config import DataConfig, JobConfig, MERConfig
from merdg.data.transforms import prepare_inputs
from merdg.entropy import build_estimator
from merdg.methods import build_method
from merdg.models import MultimodalModel
from merdg.regularizer import MERRegularizer

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


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


@torch.no_grad()
def _evaluate(model: MultimodalModel, dataset_name: str, data: DataConfig, batch_size: int,
              device: torch.device) -> tuple[float, float]:
    """Return (correct, count) of the worker's part of an evaluation set."""
    shard = ray.train.get_dataset_shard(dataset_name)
    model.eval()
    correct = 0.0
    count = 0.0
    for batch in shard.iter_torch_batches(batch_size=batch_size, device=device):
        inputs = prepare_inputs(batch, data.modalities, data, train=False)
        predictions = model(inputs).logits.argmax(dim=1)
        correct += float((predictions == batch["label"]).sum())
        count += float(batch["label"].numel())
    return correct, count


def _report_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                     metrics: dict[str, float], rank: int) -> None:
    """Report the epoch's metrics; rank 0 attaches a checkpoint of the model and optimizer."""
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
            Path(folder) / CHECKPOINT_FILE,
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Load the last checkpoint when Ray Train restarts a run; return the next epoch."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resumed from the checkpoint of epoch %d", state["epoch"])
    return int(state["epoch"])


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
    """Train one configuration; ``config`` has the keys 'job' (JobConfig), 'mer' (MERConfig) and 'num_classes'."""
    _quiet_worker_logs()
    job: JobConfig = config["job"]
    mer: MERConfig = config["mer"]
    num_classes: int = config["num_classes"]
    modalities = job.data.modalities
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    torch.manual_seed(job.train.seed)
    model = MultimodalModel(modalities, num_classes, job.model, with_projectors=mer.enabled)
    model = ray.train.torch.prepare_model(model)
    module: MultimodalModel = getattr(model, "module", model)
    method = build_method(job.train.method)
    regularizer = None
    if mer.enabled:
        estimator = build_estimator(mer.estimator, **mer.estimator_params)
        regularizer = MERRegularizer(
            estimator, mer.weight, mer.modality_weights, normalize=mer.normalize, scope=mer.scope
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=job.train.lr, weight_decay=job.train.weight_decay)
    start_epoch = _restore(module, optimizer)

    batch_size = job.train.batch_size // world_size
    train_shard = ray.train.get_dataset_shard("train")
    augment_generator = torch.Generator().manual_seed(job.train.seed * 1009 + rank)
    for epoch in range(start_epoch, job.train.epochs):
        started = time.perf_counter()
        model.train()
        sums: dict[str, float] = defaultdict(float)
        num_batches = 0
        for batch in train_shard.iter_torch_batches(
            batch_size=batch_size,
            local_shuffle_buffer_size=4 * batch_size,
            local_shuffle_seed=job.train.seed * 100003 + epoch * world_size + rank,
            device=device,
        ):
            inputs = prepare_inputs(batch, modalities, job.data, train=True, generator=augment_generator)
            output = model(inputs)
            terms = method.loss_terms(output, batch["label"])
            loss = torch.stack(list(terms.values())).sum()
            if regularizer is not None:
                mer_terms = regularizer(method.entropy_features(output))
                loss = loss + mer_terms.total
                terms.update({f"mer_{name}": value for name, value in mer_terms.per_modality.items()})
                terms["mer_total"] = mer_terms.total
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss {loss.item()} at epoch {epoch + 1}, batch {num_batches + 1} "
                    f"(terms: { {name: float(value) for name, value in terms.items()} }); lower --train.lr "
                    "or lambda, or check the input data for NaN values"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["loss"] += float(loss.detach())
            for name, value in terms.items():
                sums[name] += float(value.detach())
            num_batches += 1

        names = sorted(sums)
        totals = _all_reduce_sum([sums[name] for name in names] + [float(num_batches)], device)
        metrics = {f"train_{name}": total / max(totals[-1], 1.0) for name, total in zip(names, totals[:-1])}
        evaluation = []
        for split in EVAL_SETS:
            evaluation.extend(_evaluate(module, eval_dataset_name(split, rank), job.data, batch_size, device))
        totals = _all_reduce_sum(evaluation, device)
        counts = {split: (totals[2 * index], totals[2 * index + 1]) for index, split in enumerate(EVAL_SETS)}
        metrics.update(accuracy_metrics(counts))
        metrics.update(epoch=epoch + 1, epoch_time_s=time.perf_counter() - started)
        _report_epoch(module, optimizer, epoch + 1, metrics, rank)
