"""Diagnostics of the trained model, measured by the training workers after the last epoch.

With ``--train.diagnostics true`` (the default), the last epoch's evaluation pass also keeps each
row's encoder embeddings, and runs the target rows a second time with Gaussian noise added to
every model input. The workers send their rows to rank 0, which computes the metrics below, and
rank 0 sends them back, so every worker reports the same values with the last epoch's metrics.
Ray Tune and the trial's MLflow run receive them there.

"Source" rows are the source domains' test lists (the rows of ``val_acc``). "Target" rows are
the target's train and test lists together (the rows of ``target_acc``). Features are the
encoder embeddings (B, encoder width), before any MER projector. Accuracies are in percent; for
each modality m:

- ``diag_<m>_rankme_val`` and ``diag_<m>_rankme_target``: RankMe (effective rank, from 1 to the
  embedding width) of the source and of the target embeddings.
- ``diag_<m>_cka_source_target`` and ``diag_<m>_procrustes_source_target``: linear CKA (1 is
  aligned) and Procrustes distance (0 is aligned) between the source and the target embeddings.
  Rows of two domains are not paired, so both compare the per-class mean embeddings of the
  classes present in both (``merdg.diagnostics.compare_class_means``).
- ``diag_<m>_domain_probe_acc``: held-out accuracy of a linear probe that predicts each row's
  domain (every source domain and the target) from the embeddings. Every domain is subsampled to
  the size of the smallest one, so chance is ``diag_domain_probe_chance`` = 100 / (domains).
- ``diag_<m>_unimodal_target_acc``: target accuracy of a fresh MLP head trained on the source
  embeddings of m alone (``merdg.diagnostics.unimodal_probe``, MER-DG's protocol).
- ``diag_target_acc_without_<m>``: target accuracy of the fusion head with m's embedding
  replaced by zeros, the usual stand-in for a missing modality.

and for the model as a whole:

- ``diag_target_acc_noise``: target accuracy with N(0, std^2) noise added to every element of
  every modality's model input, std = ``--train.diagnostics_noise_std``.
- ``diag_time_s``: wall time of the diagnostics (noisy pass, transfer and computation), in
  seconds. ``epoch_time_s`` of the last epoch leaves it out.

A diagnostic that is undefined for the rows at hand (for example a domain with fewer than 2 rows
for the domain probe) is logged and reported as NaN. All probes are seeded with ``--train.seed``.
NOTE: a trial that ASHA stops before its last epoch reports no diagnostics.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from merdg.diagnostics import (
    add_gaussian_noise,
    compare_class_means,
    domain_probe_accuracy,
    missing_modality_accuracy,
    rankme,
    unimodal_probe,
)

logger = logging.getLogger(__name__)

METRIC_PREFIX = "diag_"
"""Prefix of every diagnostic metric name."""

DOMAIN_INDEX_COLUMN = "domain_index"
"""Column of the evaluation datasets: the index of the row's domain in [*sources, target]."""

SOURCE, TARGET = "val", "target"
"""Row groups: the source domains' test lists, and the target's train and test lists together."""

GROUP_OF_EVAL_SET = {"val": SOURCE, "target_train": TARGET, "target_test": TARGET}
"""The row group of each evaluation set of the training loop."""


@dataclass
class HeldOutFeatures:
    """Encoder embeddings of a group of evaluation rows, with each row's class and domain."""

    embeddings: dict[str, torch.Tensor]
    """(N, D_m) float32 CPU embeddings keyed by modality."""
    labels: torch.Tensor
    """(N,) int64 class indices."""
    domains: torch.Tensor
    """(N,) int64 domain indices: the position of the row's domain in [*sources, target]."""

    @classmethod
    def concatenate(cls, parts: Sequence[HeldOutFeatures]) -> HeldOutFeatures:
        """Join parts row-wise, in the given order; parts without rows are skipped."""
        modalities = list(parts[0].embeddings)
        parts = [part for part in parts if part.labels.numel() > 0] or list(parts[:1])
        return cls(
            embeddings={m: torch.cat([part.embeddings[m] for part in parts]) for m in modalities},
            labels=torch.cat([part.labels for part in parts]),
            domains=torch.cat([part.domains for part in parts]),
        )


class DiagnosticsCollector:
    """One worker's embeddings from the last evaluation pass, and its correct count on noisy target inputs.

    Args:
        modalities: the model's modalities, in its concatenation order.
        noise_std: standard deviation of the input noise for ``diag_target_acc_noise``.
        seed: seed of the noise; give each worker its own.
    """

    def __init__(self, modalities: Sequence[str], noise_std: float, seed: int):
        self.modalities = list(modalities)
        self.noise_std = noise_std
        self._generator = torch.Generator().manual_seed(seed)
        self._embeddings: dict[str, dict[str, list[torch.Tensor]]] = {
            group: {m: [] for m in self.modalities} for group in (SOURCE, TARGET)
        }
        self._labels: dict[str, list[torch.Tensor]] = {SOURCE: [], TARGET: []}
        self._domains: dict[str, list[torch.Tensor]] = {SOURCE: [], TARGET: []}
        self.noise_correct = 0.0
        self.noise_count = 0.0
        self.seconds = 0.0
        """Wall time spent in ``add``, in seconds."""

    @torch.no_grad()
    def add(self, eval_set: str, batch: Mapping[str, torch.Tensor], inputs: Mapping[str, torch.Tensor],
            output: Any, model: Callable[[Mapping[str, torch.Tensor]], Any]) -> None:
        """Keep one evaluation batch's embeddings; for target rows, also score ``model`` on noisy inputs.

        ``eval_set`` is a key of ``GROUP_OF_EVAL_SET``, ``batch`` the batch read from the dataset
        (with ``label`` and the domain index column), ``inputs`` the model inputs made from it and
        ``output`` the model's ``ModelOutput`` for them. ``model`` must be in eval mode.
        """
        started = time.perf_counter()
        group = GROUP_OF_EVAL_SET[eval_set]
        for m in self.modalities:
            self._embeddings[group][m].append(output.embeddings[m].detach().float().cpu())
        self._labels[group].append(batch["label"].detach().long().cpu())
        if DOMAIN_INDEX_COLUMN not in batch:
            raise KeyError(f"evaluation batch of {eval_set!r} lacks the {DOMAIN_INDEX_COLUMN!r} column that the "
                           f"domain probe needs; build the datasets with merdg.training.trainer.build_datasets")
        self._domains[group].append(batch[DOMAIN_INDEX_COLUMN].detach().long().cpu())
        if group == TARGET:
            noisy = add_gaussian_noise(inputs, self.noise_std, self._generator)
            predictions = model(noisy).logits.argmax(dim=1)
            self.noise_correct += float((predictions == batch["label"]).sum())
            self.noise_count += float(batch["label"].numel())
        self.seconds += time.perf_counter() - started

    def features(self, group: str) -> HeldOutFeatures:
        """Return this worker's rows of ``group`` (``SOURCE`` or ``TARGET``)."""
        empty = torch.zeros(0, dtype=torch.int64)
        return HeldOutFeatures(
            embeddings={m: torch.cat(parts) if parts else torch.zeros(0, 0) for m, parts in self._embeddings[group].items()},
            labels=torch.cat(self._labels[group]) if self._labels[group] else empty,
            domains=torch.cat(self._domains[group]) if self._domains[group] else empty,
        )


def _measure(metrics: dict[str, float], name: str, function: Callable[[], float]) -> None:
    """Store ``function()`` under ``name``, or NaN with a warning when the diagnostic is undefined for these rows."""
    try:
        metrics[name] = float(function())
    except ValueError as error:
        logger.warning("diagnostic %s is undefined for these rows and is reported as NaN: %s", name, error)
        metrics[name] = math.nan


def compute_diagnostics(source: HeldOutFeatures, target: HeldOutFeatures, classifier: torch.nn.Module,
                        num_classes: int, *, noise_counts: tuple[float, float], seed: int) -> dict[str, float]:
    """Compute every ``diag_`` metric but ``diag_time_s`` from all workers' rows (see the module docstring).

    ``classifier`` is the model's fusion head, in eval mode. It maps the concatenated embeddings
    (N, sum of widths), in the modality order of ``source.embeddings``, to logits (N, ``num_classes``).
    ``noise_counts`` is (correct, count) of the noisy target pass, summed over workers.
    """
    metrics: dict[str, float] = {}
    modalities = list(source.embeddings)
    device = next(classifier.parameters()).device
    domains = torch.cat([source.domains, target.domains])
    for m in modalities:
        prefix = f"{METRIC_PREFIX}{m}_"
        source_m, target_m = source.embeddings[m], target.embeddings[m]
        _measure(metrics, prefix + "rankme_val", lambda: rankme(source_m))
        _measure(metrics, prefix + "rankme_target", lambda: rankme(target_m))
        _measure(metrics, prefix + "cka_source_target",
                 lambda: compare_class_means(source_m, source.labels, target_m, target.labels, metric="linear_cka"))
        _measure(metrics, prefix + "procrustes_source_target",
                 lambda: compare_class_means(source_m, source.labels, target_m, target.labels,
                                             metric="procrustes_distance"))
        features = torch.cat([source_m, target_m])
        _measure(metrics, prefix + "domain_probe_acc",
                 lambda: 100.0 * domain_probe_accuracy(features, domains, balance=True, seed=seed).accuracy)
        _measure(metrics, prefix + "unimodal_target_acc",
                 lambda: 100.0 * unimodal_probe(source_m, source.labels, target_m, target.labels,
                                                num_classes=num_classes, seed=seed).accuracy)

    on_device = {m: target.embeddings[m].to(device) for m in modalities}
    for m in modalities:
        _measure(metrics, f"{METRIC_PREFIX}target_acc_without_{m}",
                 lambda: 100.0 * missing_modality_accuracy(classifier, on_device, target.labels, m))
    num_domains = len(torch.unique(domains))
    metrics[f"{METRIC_PREFIX}domain_probe_chance"] = 100.0 / num_domains if num_domains else math.nan
    correct, count = noise_counts
    metrics[f"{METRIC_PREFIX}target_acc_noise"] = 100.0 * correct / count if count else math.nan
    return metrics


def gather_diagnostics(collector: DiagnosticsCollector, classifier: torch.nn.Module, num_classes: int, *,
                       rank: int, seed: int) -> dict[str, float]:
    """Send every worker's rows to rank 0, compute the diagnostics there and return them on every worker.

    Every worker must call it, because it runs the collectives ``gather_object`` and
    ``broadcast_object_list`` when a process group is initialized. An error on rank 0 is sent to
    the other workers too, so that all of them raise instead of waiting.
    """
    started = time.perf_counter()
    local = {"source": collector.features(SOURCE), "target": collector.features(TARGET),
             "noise": (collector.noise_correct, collector.noise_count)}
    distributed = dist.is_available() and dist.is_initialized()
    parts: list[Any] = [local]
    if distributed:
        parts = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object(local, parts, dst=0)

    outcome: dict[str, float] | str | None = None
    if rank == 0:
        try:
            outcome = compute_diagnostics(
                HeldOutFeatures.concatenate([part["source"] for part in parts]),
                HeldOutFeatures.concatenate([part["target"] for part in parts]),
                classifier,
                num_classes,
                noise_counts=(sum(part["noise"][0] for part in parts), sum(part["noise"][1] for part in parts)),
                seed=seed,
            )
        except Exception as error:  # Sent to every worker below, then raised on each.
            logger.exception("diagnostics failed on rank 0")
            outcome = f"{type(error).__name__}: {error}"
    if distributed:
        box = [outcome]
        dist.broadcast_object_list(box, src=0)
        outcome = box[0]
    if isinstance(outcome, str):
        raise RuntimeError(f"the diagnostics of the trained model failed on rank 0 ({outcome}); "
                           "set --train.diagnostics false to train without them")
    assert outcome is not None
    outcome[f"{METRIC_PREFIX}time_s"] = collector.seconds + time.perf_counter() - started
    return outcome
