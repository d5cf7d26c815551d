"""Rebuild a sweep's results tables from its MLflow runs alone.

A sweep run (named ``sweep-<id>``) has one child run per target domain, tagged ``merdg.target``,
``merdg.sources`` and ``merdg.selection``, with the selected trial's accuracies as the metrics
``selected_val_acc``, ``selected_target_acc``, ``selected_target_test_acc`` and
``selected_epoch``, and its configuration as the params ``selected.*``. This module reads those
back into ``TargetResult`` rows, so the tables come out as the job printed them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from merdg.selection import Selection
from merdg.tuning.results import TargetResult

SWEEP_PREFIX = "sweep-"
"""Run-name prefix of a sweep run."""


class ReportError(LookupError):
    """The tracking store has no sweep or no complete target run to report."""


@dataclass
class SweepReport:
    """The results of one sweep as read from MLflow."""

    sweep_run_id: str
    title: str
    selection_label: str
    results: list[TargetResult]


def _parse_value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _nested(params: dict[str, str], prefix: str) -> dict[str, Any]:
    """Turn flattened params ``prefix.a.b`` back into ``{"a": {"b": value}}``."""
    nested: dict[str, Any] = {}
    for key, text in params.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(text)
    return nested


def find_sweep(client: MlflowClient, experiment_id: str, sweep_run_id: str | None) -> Run:
    """Return the sweep run with ``sweep_run_id``, or the newest sweep run of the experiment."""
    if sweep_run_id:
        return client.get_run(sweep_run_id)
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
    sweeps = [run for run in runs if (run.info.run_name or "").startswith(SWEEP_PREFIX)]
    if not sweeps:
        raise ReportError(
            "no sweep run (named 'sweep-...') in this experiment; run pipelines/tune_all_domains.py first"
        )
    return sweeps[0]


def _target_result(run: Run) -> TargetResult:
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    selection = Selection(
        method=params.get("selection", ""),
        label=tags.get("merdg.selection", ""),
        trial_id="",
        epoch=int(metrics["selected_epoch"]),
        val_acc=metrics["selected_val_acc"],
        target_acc=metrics["selected_target_acc"],
        target_test_acc=metrics["selected_target_test_acc"],
        params=_nested(params, "selected."),
    )
    return TargetResult(
        target=tags["merdg.target"],
        sources=tags.get("merdg.sources", "").split(","),
        selection=selection,
        num_trials=int(params.get("num_trials", 0)),
        num_failed=int(metrics.get("failed_trials", 0)),
        run_id=run.info.run_id,
    )


def read_sweep(tracking_uri: str, experiment: str = "merdg", sweep_run_id: str | None = None) -> SweepReport:
    """Read a sweep's per-target results from MLflow (the newest sweep when no id is given).

    Target runs that did not finish (no selected metrics) are left out, and the title gives their number.

    Raises:
        ReportError: the experiment, the sweep or every target result is missing.
    """
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ReportError(f"no experiment {experiment!r} in the tracking store {tracking_uri}")
    sweep = find_sweep(client, found.experiment_id, sweep_run_id)
    children = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{sweep.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    targets = [run for run in children if "merdg.target" in run.data.tags]
    complete = [run for run in targets if "selected_epoch" in run.data.metrics]
    if not complete:
        raise ReportError(f"sweep run {sweep.info.run_id} has no finished target run to report")

    params = sweep.data.params
    modalities = ast.literal_eval(params.get("data.modalities", "[]"))
    title = (f"MER-DG on {params.get('data.dataset', '?')}, modalities {'+'.join(modalities)}, "
             f"host {params.get('train.method', '?')}")
    if len(complete) < len(targets):
        title += f" ({len(targets) - len(complete)} target run(s) unfinished, left out)"
    results = [_target_result(run) for run in complete]
    label = sweep.data.tags.get("merdg.selection", results[0].selection.label)
    return SweepReport(sweep.info.run_id, title, label, results)
