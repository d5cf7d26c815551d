"""Model selection methods: which (trial, epoch) a reported accuracy comes from.

Every reported accuracy carries the label of the method that selected it, so that a number
selected on target data ("oracle") can never pass for a fair one. Two target accuracies are
reported at the selected epoch: ``target_acc`` on the target domain's train and test lists
together, and ``target_test_acc`` on its test list alone.
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
    """A named rule that scores every (trial, epoch); the highest score is selected."""

    name: str
    label: str
    score: Callable[[dict[str, float]], float]


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
    SelectionMethod("oracle", "oracle (selected on target-domain accuracy, train and test lists)",
                    score=lambda metrics: metrics["target_acc"])
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
        val_acc=float(metrics["val_acc"]),
        target_acc=float(metrics["target_acc"]),
        target_test_acc=float(metrics["target_test_acc"]),
        params=dict(history.params),
    )
