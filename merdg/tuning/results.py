"""The per-target results of a sweep, as a Markdown and a CSV table.

Both tables name the model selection method and report two target accuracies at the selected
epoch: ``target_acc`` on the target domain's train and test lists together (how the HAC peers
evaluate) and ``target_test_acc`` on its test list alone (how the EPIC peers evaluate).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from merdg.selection import Selection

COLUMNS = ("target", "sources", "lambda", "estimator", "estimator_params", "epoch",
           "source_val_acc", "target_acc", "target_test_acc", "trials")
"""Columns of the results tables, in order."""

ACCURACY_NOTE = ("source_val_acc is measured on the source domains' test lists, target_acc on the target domain's "
                 "train and test lists together, and target_test_acc on the target domain's test list alone.")
"""The data behind each accuracy column, printed under the Markdown table's heading."""


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
            "target_test_acc": f"{result.selection.target_test_acc:.2f}",
            "trials": f"{result.num_trials - result.num_failed}/{result.num_trials}",
        })
    if results:
        average = dict.fromkeys(COLUMNS, "")
        average["target"] = "average"
        for column, attribute in (("source_val_acc", "val_acc"), ("target_acc", "target_acc"),
                                  ("target_test_acc", "target_test_acc")):
            mean = sum(getattr(r.selection, attribute) for r in results) / len(results)
            average[column] = f"{mean:.2f}"
        rows.append(average)
    return rows


def results_markdown(results: Sequence[TargetResult], selection_label: str, title: str) -> str:
    """Render the results as a Markdown table headed by the selection method."""
    rows = results_rows(results)
    lines = [
        f"### {title}",
        "",
        f"Top-1 accuracy (%) of the selected configuration; model selection: {selection_label}.",
        ACCURACY_NOTE,
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(row[column] for column in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_csv(results: Sequence[TargetResult], selection_label: str) -> str:
    """Render the results as CSV with a 'selection' column naming the selection method."""
    rows = results_rows(results)
    buffer = io.StringIO()
    fields = ["selection", *COLUMNS]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"selection": selection_label, **row})
    return buffer.getvalue()
