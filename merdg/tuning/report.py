"""Rebuild a sweep's results tables from its MLflow runs alone.

Each sweep has its own MLflow experiment (``<--tracking.experiment>-<sweep id>``) with one sweep
run (named ``sweep-<id>``, tagged ``merdg.sweep_id``). Nested under it is one run per cell,
tagged ``merdg.cell_id``, whose artifact ``cell.json`` contains the cell's ``CellResult``: the
selected MER configuration and every seed's accuracies for MER and the baseline. This module
reads those back, so the tables come out as the job printed them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from merdg.tuning.results import CELL_RESULT_FILE, CellResult

SWEEP_PREFIX = "sweep-"
"""Run-name prefix of a sweep run."""

class ReportError(LookupError):
    """The tracking store has no sweep or no finished cell to report."""


@dataclass
class SweepReport:
    """The results of one sweep as read from MLflow."""

    sweep_run_id: str
    experiment: str
    title: str
    selection_label: str
    results: list[CellResult]
    unfinished: int = 0


def find_sweep(client: MlflowClient, experiment_prefix: str, sweep_run_id: str | None) -> Run:
    """Return the sweep run with ``sweep_run_id``, or the newest sweep run of the experiments named ``<prefix>-*``."""
    if sweep_run_id:
        return client.get_run(sweep_run_id)
    experiments = [e for e in client.search_experiments() if e.name.startswith(f"{experiment_prefix}-")]
    if not experiments:
        raise ReportError(f"no experiment named '{experiment_prefix}-<sweep id>' in this store; "
                          "run pipelines/tune_all_domains.py first, or pass --experiment")
    runs = client.search_runs([e.experiment_id for e in experiments], filter_string="tags.`merdg.sweep_id` != ''",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ReportError(f"no sweep run (named '{SWEEP_PREFIX}...') in the experiments named "
                          f"'{experiment_prefix}-*'; run pipelines/tune_all_domains.py first")
    return runs[0]


def _load_cell(client: MlflowClient, run: Run) -> CellResult | None:
    names = {item.path for item in client.list_artifacts(run.info.run_id)}
    if CELL_RESULT_FILE not in names:
        return None
    with tempfile.TemporaryDirectory() as folder:
        local = client.download_artifacts(run.info.run_id, CELL_RESULT_FILE, folder)
        return CellResult.from_dict(json.loads(Path(local).read_text()))


def read_sweep(tracking_uri: str, experiment: str = "merdg", sweep_run_id: str | None = None) -> SweepReport:
    """Read a sweep's cell results from MLflow (the newest sweep when no id is given).

    Cells that did not finish (no ``cell.json``) are left out and counted in ``unfinished``.
    Cells keep the order in which the sweep ran them.

    Raises:
        ReportError: the experiment, the sweep or every cell result is missing.
    """
    client = MlflowClient(tracking_uri)
    sweep = find_sweep(client, experiment, sweep_run_id)
    children = client.search_runs(
        [sweep.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{sweep.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    cells = [run for run in children if "merdg.cell_id" in run.data.tags]
    results = [result for result in (_load_cell(client, run) for run in cells) if result is not None]
    if not results:
        raise ReportError(f"sweep run {sweep.info.run_id} has no finished cell to report")
    name = client.get_experiment(sweep.info.experiment_id).name
    title = sweep.data.tags.get("merdg.title", f"MER-DG sweep {sweep.data.tags.get('merdg.sweep_id', '')}")
    label = sweep.data.tags.get("merdg.selection", results[0].selection_label)
    return SweepReport(sweep.info.run_id, name, title, label, results, unfinished=len(cells) - len(results))
