"""A sweep's results: one ``CellResult`` per (protocol, target, modalities, host), and its tables.

A cell's MER variant is the configuration the search selected, retrained with every seed of
``--tune.seeds``; its baseline is the same host method without MER (lambda 0) on the same seeds.
Tables report, per cell and averaged over target domains, the mean and standard deviation over
seeds of both target accuracies, and MER's effect as the mean and standard deviation of the
paired per-seed differences. Every table names its model selection method.

``target_acc`` is measured on the target domain's train and test lists together (how the HAC
peers evaluate) and ``target_test_acc`` on its test list alone (how the EPIC peers evaluate).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

CELL_RESULT_FILE = "cell.json"
"""Artifact of a finished cell's MLflow run holding its ``CellResult``; resuming and reports read it back."""

ACCURACIES = ("val_acc", "target_acc", "target_test_acc")
"""Accuracies recorded for every seed at its selected epoch."""

ACCURACY_NOTE = ("val_acc is measured on the source domains' test lists, target_acc on the target domain's "
                 "train and test lists together, and target_test_acc on the target domain's test list alone. "
                 "Each value is the mean +- standard deviation over seeds; delta is MER minus the baseline, "
                 "paired by seed.")
"""The data behind each accuracy column, printed under the Markdown table's heading."""


@dataclass
class SeedResult:
    """One seed's retraining, read at the epoch its selection method chose."""

    seed: int
    epoch: int
    val_acc: float
    target_acc: float
    target_test_acc: float
    confusion: list[list[int]] | None = None
    """Confusion matrix of the target's train and test lists at that epoch (rows true, columns predicted)."""


@dataclass
class VariantResult:
    """A configuration (MER's selected one, or the baseline) and its seeds' results."""

    params: dict[str, Any]
    seeds: list[SeedResult] = field(default_factory=list)
    selected_epoch: int | None = None
    """The epoch the search selected (read by fixed-epoch methods), or None."""

    def values(self, name: str) -> list[float]:
        return [getattr(seed, name) for seed in self.seeds]

    def confusion(self) -> list[list[int]] | None:
        """Return the sum of the seeds' target confusion matrices, or None when a seed has none."""
        matrices = [seed.confusion for seed in self.seeds]
        if not matrices or any(m is None for m in matrices):
            return None
        size = len(matrices[0])
        return [[sum(m[row][column] for m in matrices) for column in range(size)] for row in range(size)]


@dataclass
class TrialSummary:
    """One search trial: its sampled settings and its best epoch under the selection method."""

    trial_id: str
    params: dict[str, Any]
    epochs: int
    score: float
    target_acc: float


@dataclass
class CellResult:
    """The results of one (protocol, target, modalities, host method) cell of a sweep."""

    protocol: str
    target: str
    sources: list[str]
    modalities: list[str]
    method: str
    selection: str
    selection_label: str
    mer: VariantResult
    baseline: VariantResult | None = None
    trials: list[TrialSummary] = field(default_factory=list)
    num_failed: int = 0
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CellResult:
        values = dict(values)

        def variant(raw: dict[str, Any] | None) -> VariantResult | None:
            if raw is None:
                return None
            return VariantResult(params=raw["params"], seeds=[SeedResult(**s) for s in raw["seeds"]],
                                 selected_epoch=raw.get("selected_epoch"))

        values["mer"] = variant(values["mer"])
        values["baseline"] = variant(values.get("baseline"))
        values["trials"] = [TrialSummary(**t) for t in values.get("trials", [])]
        return cls(**values)

    def paired_deltas(self, name: str) -> list[float]:
        """MER minus baseline for each seed both variants ran."""
        if self.baseline is None:
            return []
        base = {seed.seed: getattr(seed, name) for seed in self.baseline.seeds}
        return [getattr(seed, name) - base[seed.seed] for seed in self.mer.seeds if seed.seed in base]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN for none."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _format(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return "" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def describe_params(params: dict[str, Any]) -> str:
    """Format a MER configuration as 'logdet (gamma=1.2), lambda 3'."""
    estimator = str(params.get("estimator", ""))
    own = params.get(estimator, {}) or {}
    details = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in sorted(own.items()))
    text = f"{estimator} ({details})" if details else estimator
    extras = [f"{key} {params[key]}" for key in ("normalize",) if key in params]
    return ", ".join([text, f"lambda {float(params.get('lambda', 0.0)):.3g}", *extras])


COLUMNS = ("protocol", "modalities", "host", "target", "sources", "seeds",
           "base target_acc", "MER target_acc", "delta target_acc",
           "base target_test_acc", "MER target_test_acc", "delta target_test_acc",
           "base val_acc", "MER val_acc", "MER configuration")
"""Columns of the Markdown results table, in order."""


def _row(label: str, cells: Sequence[CellResult]) -> dict[str, str]:
    """Return one table row: a single cell, or the average over target domains of cells that share the rest."""
    first = cells[0]

    def gather(variant: str, name: str) -> list[float]:
        # Per seed, the mean over cells; so the average row's std is over seeds, like the others.
        per_seed: dict[int, list[float]] = {}
        for cell in cells:
            chosen = cell.mer if variant == "mer" else cell.baseline
            for seed in chosen.seeds if chosen else []:
                per_seed.setdefault(seed.seed, []).append(getattr(seed, name))
        return [statistics.fmean(v) for v in per_seed.values() if len(v) == len(cells)]

    def deltas(name: str) -> list[float]:
        per_seed: dict[int, list[float]] = {}
        for cell in cells:
            base = {s.seed: getattr(s, name) for s in cell.baseline.seeds} if cell.baseline else {}
            for seed in cell.mer.seeds:
                if seed.seed in base:
                    per_seed.setdefault(seed.seed, []).append(getattr(seed, name) - base[seed.seed])
        return [statistics.fmean(v) for v in per_seed.values() if len(v) == len(cells)]

    return {
        "protocol": first.protocol,
        "modalities": "+".join(first.modalities),
        "host": first.method,
        "target": label,
        "sources": "+".join(first.sources) if len(cells) == 1 else "",
        "seeds": str(len(first.mer.seeds)),
        "base target_acc": _format(gather("base", "target_acc")),
        "MER target_acc": _format(gather("mer", "target_acc")),
        "delta target_acc": _format(deltas("target_acc")),
        "base target_test_acc": _format(gather("base", "target_test_acc")),
        "MER target_test_acc": _format(gather("mer", "target_test_acc")),
        "delta target_test_acc": _format(deltas("target_test_acc")),
        "base val_acc": _format(gather("base", "val_acc")),
        "MER val_acc": _format(gather("mer", "val_acc")),
        "MER configuration": describe_params(first.mer.params) if len(cells) == 1 else "",
    }


def group_key(cell: CellResult) -> tuple[str, tuple[str, ...], str]:
    return cell.protocol, tuple(cell.modalities), cell.method


def results_rows(cells: Sequence[CellResult]) -> list[dict[str, str]]:
    """Return one row per cell, and after each (protocol, modalities, host) group an 'average' row."""
    groups: dict[tuple, list[CellResult]] = {}
    for cell in cells:
        groups.setdefault(group_key(cell), []).append(cell)
    rows = []
    for members in groups.values():
        for cell in members:
            target = cell.target if cell.protocol == "multi_source" else f"{cell.target} (from {cell.sources[0]})"
            rows.append(_row(target, [cell]))
        if len(members) > 1:
            rows.append(_row("average", members))
    return rows


def results_markdown(cells: Sequence[CellResult], selection_label: str, title: str) -> str:
    """Render the results as a Markdown table headed by the selection method."""
    lines = [
        f"### {title}",
        "",
        f"Top-1 accuracy (%); model selection: {selection_label}.",
        ACCURACY_NOTE,
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(row[column] for column in COLUMNS) + " |" for row in results_rows(cells)]
    return "\n".join(lines) + "\n"


SEED_COLUMNS = ("selection", "protocol", "modalities", "host", "target", "sources", "variant", "seed", "epoch",
                "val_acc", "target_acc", "target_test_acc", "lambda", "estimator")
"""Columns of the per-seed CSV table."""


def results_csv(cells: Sequence[CellResult], selection_label: str) -> str:
    """Render every seed of every variant as CSV rows, each naming the selection method."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SEED_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for cell in cells:
        for name, variant in (("base", cell.baseline), ("mer", cell.mer)):
            for seed in variant.seeds if variant else []:
                writer.writerow({
                    "selection": selection_label, "protocol": cell.protocol, "modalities": "+".join(cell.modalities),
                    "host": cell.method, "target": cell.target, "sources": "+".join(cell.sources), "variant": name,
                    "seed": seed.seed, "epoch": seed.epoch, "val_acc": f"{seed.val_acc:.2f}",
                    "target_acc": f"{seed.target_acc:.2f}", "target_test_acc": f"{seed.target_test_acc:.2f}",
                    "lambda": f"{float(variant.params.get('lambda', 0.0)):.4g}",
                    "estimator": variant.params.get("estimator", "") if name == "mer" else "",
                })
    return buffer.getvalue()


def summary_metrics(cell: CellResult) -> dict[str, float]:
    """Mean and std over seeds of each accuracy per variant, and the paired deltas, as MLflow metrics."""
    metrics: dict[str, float] = {}
    for name, variant in (("mer", cell.mer), ("base", cell.baseline)):
        for accuracy in ACCURACIES:
            mean, std = mean_std(variant.values(accuracy) if variant else [])
            if not math.isnan(mean):
                metrics[f"{name}_{accuracy}_mean"] = mean
                metrics[f"{name}_{accuracy}_std"] = std
    for accuracy in ACCURACIES:
        mean, std = mean_std(cell.paired_deltas(accuracy))
        if not math.isnan(mean):
            metrics[f"delta_{accuracy}_mean"] = mean
            metrics[f"delta_{accuracy}_std"] = std
    return metrics
