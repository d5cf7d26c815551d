"""The per-target results of a sweep, as a Markdown and a CSV table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from merdg.selection import Selection


@dataclass
class TargetResult:
    """The selected configuration for one target domain and the accuracies at its selected epoch."""

    target: str
    sources: list[str]
    selection: Selection
    num_trials: int
    num_failed: int = 0
    run_id: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def _describe_params(params: dict) -> tuple[str, str]:
    estimator = str(params.get("estimator", ""))
    own = params.get(estimator, {}) or {}
    details = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in sorted(own.items()))
    return estimator, details


def results_rows(results: Sequence[TargetResult]) -> list[dict[str, str]]:
    """Return one row per target domain plus an average row, with accuracies in percent."""
    rows = []
    for result in results:
        estimator, details = _describe_params(result.selection.params)
        rows.append({
            "target": result.target,
            "sources": "+".join(result.sources),
            "lambda": f"{float(result.selection.params.get('lambda', 0.0)):.3g}",
            "estimator": estimator,
            "estimator_params": details,
            "epoch": str(result.selection.epoch),
            "source_val_acc": f"{result.selection.val_acc:.2f}",
            "target_acc": f"{result.selection.target_acc:.2f}",
            "trials": f"{result.num_trials - result.num_failed}/{result.num_trials}",
        })
    if results:
        mean_val = sum(r.selection.val_acc for r in results) / len(results)
        mean_target = sum(r.selection.target_acc for r in results) / len(results)
        rows.append({
            "target": "average", "sources": "", "lambda": "", "estimator": "", "estimator_params": "",
            "epoch": "", "source_val_acc": f"{mean_val:.2f}", "target_acc": f"{mean_target:.2f}", "trials": "",
        })
    return rows


def results_markdown(results: Sequence[TargetResult], selection_label: str, title: str) -> str:
    """Render the results as a Markdown table headed by the selection method."""
    rows = results_rows(results)
    header = ["target", "sources", "lambda", "estimator", "estimator_params", "epoch",
              "source_val_acc", "target_acc", "trials"]
    lines = [
        f"### {title}",
        "",
        f"Top-1 accuracy (%) of the selected configuration; model selection: {selection_label}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row[column] for column in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_csv(results: Sequence[TargetResult], selection_label: str) -> str:
    """Render the results as CSV with a 'selection' column naming the selection method."""
    rows = results_rows(results)
    buffer = io.StringIO()
    fields = ["selection", *(rows[0].keys() if rows else [])]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"selection": selection_label, **row})
    return buffer.getvalue()
