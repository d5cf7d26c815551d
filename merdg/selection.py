"""Model selection methods: which (trial, epoch) a reported accuracy comes from.

Every reported accuracy carries the label of the method that selected it, so that a number
selected on target data ("oracle") can never pass for a fair one. Two target accuracies are
reported at the selected epoch: ``target_acc`` on the target domain's train and test lists
together, and ``target_test_acc`` on its test list alone.

Three methods are registered:

- ``source_val``: the highest accuracy on the source domains' test lists (``val_acc``), in the
  search and again in each seed's retraining;
- ``lodo``: leave-one-source-domain-out validation (Gulrajani and Lopez-Paz, "In Search of Lost
  Domain Generalization", ICLR 2021). Each search trial trains one model per source domain on the
  other sources and scores each epoch by the mean accuracy on the held-out source (``lodo_acc``).
  The selected configuration is retrained on all sources, and each seed is read at the selected
  epoch, because a model trained on every source has no held-out source left to select with;
- ``oracle``: the highest target accuracy, labeled as oracle wherever it is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialHistory:
    """The per-epoch metrics one trial reported (each with 'epoch', 'val_acc', 'target_acc', 'target_test_acc')."""

    trial_id: str
    params: dict[str, Any]
    epochs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Selection:
    """The selected trial and epoch, with the accuracies there and the method's label."""

    method: str
    label: str
    trial_id: str
    epoch: int
    val_acc: float
    """Accuracy (%) on the source domains' test lists."""
    target_acc: float
    """Accuracy (%) on the target domain's train and test lists together."""
    target_test_acc: float
    """Accuracy (%) on the target domain's test list alone."""
    params: dict[str, Any]


@dataclass(frozen=True)
class SelectionMethod:
    """A named rule that scores every (trial, epoch); the highest score is selected.

    ``metric`` is the per-epoch value the search maximises. When ``fixed_epoch`` is true, seed
    retraining does not select again: it is read at the epoch the search selected.
    """

    name: str
    label: str
    score: Callable[[dict[str, float]], float]
    metric: str = "val_acc"
    fixed_epoch: bool = False


SELECTION_METHODS: dict[str, SelectionMethod] = {}
"""Registered selection methods by name."""


def register_selection(method: SelectionMethod) -> SelectionMethod:
    """Register a selection method under its name."""
    SELECTION_METHODS[method.name] = method
    return method


register_selection(
    SelectionMethod("source_val", "source-domain validation", score=lambda metrics: metrics["val_acc"])
)
register_selection(
    SelectionMethod("lodo", "leave-one-source-domain-out validation", score=lambda metrics: metrics["lodo_acc"],
                    metric="lodo_acc", fixed_epoch=True)
)
register_selection(
    SelectionMethod("oracle", "oracle (selected on target-domain accuracy, train and test lists)",
                    score=lambda metrics: metrics["target_acc"], metric="target_acc")
)


def select(histories: Sequence[TrialHistory], method: str = "source_val") -> Selection:
    """Return the (trial, epoch) with the highest score under ``method``.

    Ties go to the earlier trial, then the earlier epoch, so the result does not depend on
    dictionary order.
    """
    if method not in SELECTION_METHODS:
        raise KeyError(f"unknown selection method {method!r}; registered: {sorted(SELECTION_METHODS)}")
    rule = SELECTION_METHODS[method]
    best: tuple[float, TrialHistory, dict[str, float]] | None = None
    for history in histories:
        for metrics in history.epochs:
            score = rule.score(metrics)
            if best is None or score > best[0]:
                best = (score, history, metrics)
    if best is None:
        raise ValueError("no trial reported any epoch; nothing to select from")
    _, history, metrics = best
    return Selection(
        method=rule.name,
        label=rule.label,
        trial_id=history.trial_id,
        epoch=int(metrics["epoch"]),
        val_acc=float(metrics.get("val_acc", metrics.get(rule.metric, float("nan")))),
        target_acc=float(metrics.get("target_acc", float("nan"))),
        target_test_acc=float(metrics.get("target_test_acc", float("nan"))),
        params=dict(history.params),
    )


def select_seed_epoch(history: TrialHistory, method: str, selected_epoch: int) -> Selection:
    """Return the epoch of one seed's retraining that ``method`` reports.

    Methods with ``fixed_epoch`` read the retraining at ``selected_epoch``, the search's choice
    (or at the retraining's last epoch when it is shorter). The other methods select again among
    the seed's epochs with their own rule.
    """
    rule = SELECTION_METHODS[method]
    if not rule.fixed_epoch:
        return select([history], method)
    if not history.epochs:
        raise ValueError(f"trial {history.trial_id} reported no epoch; nothing to select from")
    reached = [metrics for metrics in history.epochs if int(metrics["epoch"]) <= selected_epoch]
    metrics = reached[-1] if reached else history.epochs[0]
    return Selection(
        method=rule.name, label=rule.label, trial_id=history.trial_id, epoch=int(metrics["epoch"]),
        val_acc=float(metrics["val_acc"]), target_acc=float(metrics["target_acc"]),
        target_test_acc=float(metrics["target_test_acc"]), params=dict(history.params),
    )
