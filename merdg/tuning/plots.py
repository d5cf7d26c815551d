"""Figures of a cell's results. They are built as plain Matplotlib ``Figure`` objects, outside pyplot, so
no display or global figure registry is involved."""

from __future__ import annotations

import math

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
    figure = Figure(figsize=(4 * len(estimators), 3.2))
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
    figure.suptitle(f"{'+'.join(cell.modalities)} {cell.method}, target {cell.target} "
                    f"(selection: {cell.selection_label})", fontsize=9)
    figure.tight_layout()
    return figure
