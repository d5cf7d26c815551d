"""Figures of a cell's results. They are built as plain Matplotlib ``Figure`` objects, outside pyplot, so
no display or global figure registry is involved."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure

from merdg.tuning.results import CellResult, mean_std


def lambda_figure(cell: CellResult) -> Figure | None:
    """Plot each search trial's best selection score and its target accuracy against lambda, one panel per estimator.

    The baseline's seed-mean target accuracy is drawn as a horizontal line. Returns None when
    the cell has no trial.
    """
    estimators = sorted({str(trial.params.get("estimator", "")) for trial in cell.trials})
    if not estimators:
        return None
    figure = Figure(figsize=(max(5.5, 4 * len(estimators)), 3.6))
    axes = figure.subplots(1, len(estimators), squeeze=False, sharey=True)
    base, _ = mean_std(cell.baseline.values("target_acc")) if cell.baseline else (math.nan, 0.0)
    for axis, estimator in zip(axes[0], estimators, strict=True):
        trials = sorted((t for t in cell.trials if t.params.get("estimator") == estimator),
                        key=lambda t: float(t.params.get("lambda", 0.0)))
        lambdas = [max(float(t.params.get("lambda", 0.0)), 1e-4) for t in trials]
        axis.plot(lambdas, [t.score for t in trials], "o-", label=f"{cell.selection} score")
        axis.plot(lambdas, [t.target_acc for t in trials], "s--", label="target_acc at that epoch")
        if not math.isnan(base):
            axis.axhline(base, color="gray", linestyle=":", label="no MER (seed mean)")
        axis.set_xscale("log")
        axis.set_title(estimator)
        axis.set_xlabel("lambda")
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"{'+'.join(cell.modalities)} {cell.method}, target {cell.target}\n"
                    f"(selection: {cell.selection_label})", fontsize=9)
    figure.tight_layout()
    return figure


def _confusion_panels(cell: CellResult, class_names: Sequence[str]) -> tuple[list, list[str]]:
    """Return (variant label, summed confusion matrix) for each variant that has one, and the class labels."""
    matrices = [(name, variant.confusion()) for name, variant in (("no MER", cell.baseline), ("MER", cell.mer))
                if variant is not None]
    panels = [(name, matrix) for name, matrix in matrices if matrix is not None]
    size = len(panels[0][1]) if panels else 0
    names = list(class_names) if len(class_names) == size else [str(i) for i in range(size)]
    return panels, names


def confusion_figure(cell: CellResult, class_names: Sequence[str]) -> Figure | None:
    """Draw the target confusion matrices (summed over seeds) of the baseline and MER side by side.

    Rows are true classes and columns predicted ones, normalised per row to percentages.
    Returns None when no variant has a confusion matrix.
    """
    panels, names = _confusion_panels(cell, class_names)
    if not panels:
        return None
    size = len(names)
    figure = Figure(figsize=(4.2 * len(panels), 4.0))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (name, matrix) in zip(axes, panels, strict=True):
        shares = [[100.0 * value / max(sum(row), 1) for value in row] for row in matrix]
        axis.imshow(shares, vmin=0.0, vmax=100.0, cmap="Blues")
        for row in range(size):
            for column in range(size):
                axis.text(column, row, f"{shares[row][column]:.0f}", ha="center", va="center", fontsize=7,
                          color="white" if shares[row][column] > 50 else "black")
        axis.set_xticks(range(size), names, rotation=45, ha="right", fontsize=7)
        axis.set_yticks(range(size), names, fontsize=7)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{name} (% of each true class)", fontsize=9)
    figure.suptitle(f"target {cell.target}, {'+'.join(cell.modalities)} {cell.method}, summed over seeds\n"
                    f"(selection: {cell.selection_label})", fontsize=9)
    figure.tight_layout()
    return figure


def per_class_figure(cell: CellResult, class_names: Sequence[str]) -> Figure | None:
    """Draw the per-class target accuracy (summed over seeds) of the baseline and MER as grouped bars."""
    panels, names = _confusion_panels(cell, class_names)
    if not panels:
        return None
    size = len(names)
    figure = Figure(figsize=(max(5.0, 0.8 * size + 2), 3.2))
    axis = figure.subplots()
    width = 0.8 / len(panels)
    for index, (name, matrix) in enumerate(panels):
        accuracy = [100.0 * matrix[row][row] / max(sum(matrix[row]), 1) for row in range(size)]
        axis.bar([x + index * width for x in range(size)], accuracy, width, label=name)
    axis.set_xticks([x + 0.4 - width / 2 for x in range(size)], names, rotation=30, ha="right", fontsize=7)
    axis.set_ylabel("target accuracy (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=7)
    axis.set_title(f"per-class accuracy on target {cell.target}, summed over seeds\n(selection: "
                   f"{cell.selection_label})", fontsize=8)
    figure.tight_layout()
    return figure
