"""Results tables and trial histories: both target accuracies and the selection method are named."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import pandas as pd

from merdg.tuning.results import (
    CellResult,
    SeedResult,
    VariantResult,
    results_csv,
    results_markdown,
    results_rows,
    summary_metrics,
)
from merdg.tuning.sweep import _histories

LABEL = "source-domain validation"
MER_PARAMS = {"lambda": 3.0, "estimator": "logdet", "logdet": {"eps": 1e-4}}


def seeds(*values: tuple[float, float]) -> list[SeedResult]:
    """Seeds 0, 1, ... with the given (target_acc, target_test_acc); val_acc is 70."""
    return [SeedResult(seed=i, epoch=2, val_acc=70.0, target_acc=a, target_test_acc=b) for i, (a, b) in enumerate(values)]


def cell(target: str, mer: list[SeedResult], base: list[SeedResult] | None) -> CellResult:
    return CellResult(
        protocol="multi_source", target=target, sources=["a", "b"], modalities=["video", "audio"], method="fusion",
        selection="source_val", selection_label=LABEL, mer=VariantResult(MER_PARAMS, mer),
        baseline=VariantResult({"lambda": 0.0, "estimator": "logdet"}, base) if base is not None else None,
    )


RESULTS = [
    cell("c", seeds((60.0, 55.0), (64.0, 57.0)), seeds((50.0, 50.0), (58.0, 52.0))),
    cell("d", seeds((50.0, 40.0), (52.0, 44.0)), seeds((40.0, 40.0), (40.0, 40.0))),
]


def test_rows_report_mean_std_and_paired_deltas():
    rows = results_rows(RESULTS)
    assert [row["target"] for row in rows] == ["c", "d", "average"]
    assert rows[0]["MER target_acc"] == "62.00 ± 2.83"
    assert rows[0]["base target_acc"] == "54.00 ± 5.66"
    # Paired by seed: 60-50 = 10 and 64-58 = 6.
    assert rows[0]["delta target_acc"] == "8.00 ± 2.83"
    assert rows[0]["MER configuration"] == "logdet (eps=0.0001), lambda 3"
    # The average row averages each seed over targets first: seed 0 (60+50)/2 - (50+40)/2 = 10,
    # seed 1 (64+52)/2 - (58+40)/2 = 9.
    assert rows[2]["delta target_acc"] == "9.50 ± 0.71"
    assert rows[2]["seeds"] == "2"


def test_markdown_names_selection_and_both_accuracies():
    text = results_markdown(RESULTS, LABEL, "A sweep")
    assert "model selection: source-domain validation" in text
    assert "| base target_acc | MER target_acc | delta target_acc | base target_test_acc |" in text
    assert "| multi_source | video+audio | fusion | c | a+b | 2 |" in text


def test_csv_has_one_row_per_seed_and_variant():
    rows = list(csv.DictReader(io.StringIO(results_csv(RESULTS, LABEL))))
    assert len(rows) == 8
    assert {row["selection"] for row in rows} == {LABEL}
    assert [(r["variant"], r["seed"], r["target_acc"]) for r in rows[:4]] == [
        ("base", "0", "50.00"), ("base", "1", "58.00"), ("mer", "0", "60.00"), ("mer", "1", "64.00")]


def test_csv_of_no_results_keeps_header():
    assert results_csv([], LABEL).splitlines()[0].startswith("selection,protocol,modalities,host,target,")


def test_without_baseline_there_is_no_delta():
    only = cell("c", seeds((60.0, 55.0)), None)
    row = results_rows([only])[0]
    assert row["delta target_acc"] == ""
    assert row["MER target_acc"] == "60.00 ± 0.00"
    assert "delta_target_acc_mean" not in summary_metrics(only)


def test_summary_metrics_and_round_trip():
    metrics = summary_metrics(RESULTS[0])
    assert metrics["mer_target_acc_mean"] == 62.0
    assert metrics["delta_target_acc_mean"] == 8.0
    assert CellResult.from_dict(RESULTS[0].to_dict()) == RESULTS[0]


def test_single_source_rows_name_the_source():
    single = CellResult(protocol="single_source", target="c", sources=["a"], modalities=["video"], method="fusion",
                        selection="source_val", selection_label=LABEL, mer=VariantResult(MER_PARAMS, seeds((1.0, 2.0))))
    assert results_rows([single])[0]["target"] == "c (from a)"


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


def test_histories_keep_latest_repeated_epoch():
    # A trial restored from its checkpoint reports the epochs after it again.
    frame = pd.DataFrame({"epoch": [1, 2, 2, 3], "val_acc": [50.0, 55.0, 60.0, 65.0],
                          "target_acc": [1.0, 2.0, 3.0, 4.0], "target_test_acc": [1.0, 2.0, 3.0, 4.0]})
    result = SimpleNamespace(error=None, metrics_dataframe=frame, metrics={"trial_id": "t"}, config={})
    histories, _ = _histories([result])
    assert [(e["epoch"], e["val_acc"]) for e in histories[0].epochs] == [(1, 50.0), (2, 60.0), (3, 65.0)]
