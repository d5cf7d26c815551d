"""Results tables and trial histories: both target accuracies and the selection method are named."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import pandas as pd

from merdg.selection import Selection
from merdg.tuning.results import TargetResult, results_csv, results_markdown, results_rows
from merdg.tuning.sweep import _histories

LABEL = "source-domain validation"


def target_result(target: str, val: float, target_acc: float, target_test_acc: float) -> TargetResult:
    selection = Selection("source_val", LABEL, "t1", 3, val, target_acc, target_test_acc,
                          {"lambda": 3.0, "estimator": "logdet", "logdet": {"eps": 1e-4}})
    return TargetResult(target, ["a", "b"], selection, num_trials=4, num_failed=1)


RESULTS = [target_result("c", 80.0, 60.0, 55.0), target_result("d", 70.0, 50.0, 40.0)]


def test_rows_report_both_target_accuracies():
    rows = results_rows(RESULTS)
    assert [row["target"] for row in rows] == ["c", "d", "average"]
    assert (rows[0]["target_acc"], rows[0]["target_test_acc"]) == ("60.00", "55.00")
    assert (rows[2]["source_val_acc"], rows[2]["target_acc"], rows[2]["target_test_acc"]) == ("75.00", "55.00", "47.50")
    assert rows[0]["trials"] == "3/4"
    assert rows[0]["estimator_params"] == "eps=0.0001"


def test_markdown_names_selection_and_both_accuracies():
    markdown = results_markdown(RESULTS, LABEL, "unit")
    assert f"model selection: {LABEL}" in markdown
    assert "target_acc on the target domain's train and test lists together" in markdown
    assert "target_test_acc on the target domain's test list alone" in markdown
    assert "| source_val_acc | target_acc | target_test_acc | trials |" in markdown
    assert "| c | a+b | 3 | logdet | eps=0.0001 | 3 | 80.00 | 60.00 | 55.00 | 3/4 |" in markdown


def test_csv_has_selection_and_both_accuracies():
    rows = list(csv.DictReader(io.StringIO(results_csv(RESULTS, LABEL))))
    assert [row["selection"] for row in rows] == [LABEL] * 3
    assert [row["target_test_acc"] for row in rows] == ["55.00", "40.00", "47.50"]
    assert [row["target_acc"] for row in rows] == ["60.00", "50.00", "55.00"]


def test_csv_of_no_results_keeps_header():
    assert results_csv([], LABEL).splitlines()[0].startswith("selection,target,sources,")


def test_histories_read_both_target_accuracies():
    frame = pd.DataFrame({
        "epoch": [1, 2], "val_acc": [50.0, 60.0], "target_acc": [40.0, 45.0],
        "target_test_acc": [30.0, 35.0], "train_ce": [1.0, 0.5],
    })
    result = SimpleNamespace(error=None, metrics_dataframe=frame, metrics={"trial_id": "t7"}, config={"lambda": 1.0})

    histories, errors = _histories([result])

    assert errors == []
    assert histories[0].trial_id == "t7"
    assert histories[0].epochs == [
        {"epoch": 1, "val_acc": 50.0, "target_acc": 40.0, "target_test_acc": 30.0},
        {"epoch": 2, "val_acc": 60.0, "target_acc": 45.0, "target_test_acc": 35.0},
    ]


def test_report_without_store_exits_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "pipelines" / "report.py"
    process = subprocess.run([sys.executable, str(script), "--output_dir", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert process.returncode == 2
    assert f"no MLflow store at {tmp_path / 'mlflow.db'}" in process.stderr
