"""End-to-end: the real main job (Ray Data, Ray Train DDP, Ray Tune + Optuna, MLflow, PyAV).

Each test runs ``pipelines/tune_all_domains.py`` in a subprocess with a tiny configuration and
checks the printed table and what landed in the MLflow store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from merdg.tracking import default_tracking_uri
from tests.data.real_tree import build_real_hac_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "pipelines" / "tune_all_domains.py"

# Balanced batches take an equal share of each worker's batch from every source domain. The real
# trees give a worker 1 or 2 training clips per domain, so the batch is 4 rows over 2 workers.
TINY_TRAINING = [
    "--train.epochs", "2",
    "--train.batch_size", "4",
    "--tune.num_trials", "2",
    "--tune.grace_period", "1",
    "--model.width", "4",
    "--model.embed_dim", "16",
    "--model.projector_hidden", "32",
    "--model.projection_dim", "16",
    "--model.fusion_hidden", "32",
    "--tune.seeds", "[0]",
    "--tune.baseline", "false",
]
# End-to-end tests that do not check the choice between trials run one, as each run costs several
# process starts (a Tune trial, a Ray Train controller, workers and helper actors).
ONE_TRIAL = ["--tune.num_trials", "1"]


def run_main_job(args: list[str], tmp_path: Path, *, expect_success: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--output_dir", str(tmp_path / "runs"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=840,
    )
    if expect_success:
        assert process.returncode == 0, f"main job failed:\n{process.stdout[-4000:]}\n{process.stderr[-8000:]}"
    return process


def truncate(path: Path) -> None:
    """Replace a clip by a copy cut to its first 3000 bytes, as an interrupted copy leaves it.

    The tree links to the real media, so the link is removed first and the real file is untouched.
    """
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[:3000])


def sweep_experiment(client: MlflowClient):
    """The one sweep experiment ('merdg-<sweep id>') of a test's store."""
    experiments = [e for e in client.search_experiments() if e.name.startswith("merdg-")]
    assert len(experiments) == 1, [e.name for e in experiments]
    return experiments[0]


def check_mlflow(tmp_path: Path, targets: list[str], num_trials: int, epochs: int,
                 skipped: int = 0, seeds: int = 1, baseline: bool = False) -> MlflowClient:
    """Check the sweep, cell, search-trial and seed runs that one single-cell-per-target sweep leaves."""
    client = MlflowClient(default_tracking_uri(tmp_path / "runs"))
    experiment = sweep_experiment(client)
    runs = client.search_runs([experiment.experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    sweeps = [r for r in runs if r.info.run_name.startswith("sweep-")]
    assert len(sweeps) == 1
    sweep = sweeps[0]
    assert sweep.info.status == "FINISHED"
    assert sweep.data.metrics["data_skipped_clips"] == skipped
    quarantined = [a.path for a in client.list_artifacts(sweep.info.run_id, "data")]
    assert quarantined == (["data/quarantine.csv"] if skipped else [])
    assert [a.path for a in client.list_artifacts(sweep.info.run_id, "results")] == [
        "results/results.csv", "results/results.md"]
    assert {"mean_target_acc", "mean_target_test_acc"} <= set(sweep.data.metrics)
    cell_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    assert sorted(r.data.tags["merdg.target"] for r in cell_runs) == sorted(targets)
    for cell_run in cell_runs:
        assert cell_run.info.status == "FINISHED"
        assert cell_run.data.tags["merdg.selection"] == "source-domain validation"
        assert 0.0 <= cell_run.data.metrics["mer_target_acc_mean"] <= 100.0
        assert 0.0 <= cell_run.data.metrics["mer_target_test_acc_mean"] <= 100.0
        assert ("delta_target_acc_mean" in cell_run.data.metrics) == baseline
        artifacts = {a.path for a in client.list_artifacts(cell_run.info.run_id)}
        assert "cell.json" in artifacts
        assert [a.path for a in client.list_artifacts(cell_run.info.run_id, "plots")] == [
            "plots/confusion.png", "plots/lambda_vs_accuracy.png", "plots/per_class_accuracy.png"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == cell_run.info.run_id]
        phases = sorted(r.data.tags["merdg.phase"] for r in children)
        expected = ["search"] * num_trials + ["mer-seeds"] * seeds + (["baseline-seeds"] * seeds if baseline else [])
        assert phases == sorted(expected)
        trials = [r for r in children if r.data.tags["merdg.phase"] == "search"]
        assert sum(r.data.tags.get("merdg.selected") == "true" for r in trials) == 1
        for trial in children:
            assert trial.info.status == "FINISHED"
            assert {"lambda", "estimator"} <= set(trial.data.params)
            history = client.get_metric_history(trial.info.run_id, "val_acc")
            assert 1 <= len(history) <= epochs
            assert "target_acc" in trial.data.metrics
            assert "target_test_acc" in trial.data.metrics
            assert "train_ce" in trial.data.metrics
        for seed_run in (r for r in children if r.data.tags["merdg.phase"].endswith("seeds")):
            assert len(client.get_metric_history(seed_run.info.run_id, "val_acc")) == epochs
    return client


@pytest.mark.slow
def test_main_job_on_generated_benchmark(tmp_path):
    args = [
        "--data.cache_dir", str(tmp_path / "cache"),
        "--data.benchmark.num_classes", "3",
        "--data.benchmark.clips_per_class", "4",
        "--tune.targets", "[retro]",
        *TINY_TRAINING,
    ]
    process = run_main_job([*args, "--tune.seeds", "[0,1]", "--tune.baseline", "true"], tmp_path)
    assert "model selection: source-domain validation" in process.stdout
    assert "| base target_acc | MER target_acc | delta target_acc |" in process.stdout
    row = next(line for line in process.stdout.splitlines() if line.startswith("| multi_source |"))
    assert "| retro | studio+street | 2 |" in row
    assert row.count(" ± ") == 8
    client = check_mlflow(tmp_path, ["retro"], num_trials=2, epochs=2, seeds=2, baseline=True)
    check_report_matches_artifact(client, tmp_path)


def check_report_matches_artifact(client: MlflowClient, tmp_path: Path) -> None:
    """pipelines/report.py, reading MLflow alone, prints the table the job stored."""
    report = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "report.py"), "--output_dir", str(tmp_path / "runs"),
         "--csv", str(tmp_path / "report.csv")],
        capture_output=True, text=True, timeout=120,
    )
    assert report.returncode == 0, report.stderr
    experiment = sweep_experiment(client)
    sweep = next(r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name.startswith("sweep-"))
    artifacts = str(tmp_path / "artifacts")
    stored = Path(client.download_artifacts(sweep.info.run_id, "results/results.md", artifacts))
    assert report.stdout.split("\nCSV written")[0] == stored.read_text()
    stored_csv = Path(client.download_artifacts(sweep.info.run_id, "results/results.csv", artifacts))
    assert (tmp_path / "report.csv").read_text() == stored_csv.read_text()


def real_tree_args(root: Path, tmp_path: Path) -> list[str]:
    return [
        "--data.dataset", "hac",
        "--data.root", str(root),
        "--data.cache_dir", str(tmp_path / "cache"),
        "--data.audio.num_samples", "16000",
        "--tune.targets", "[cartoon]",
        *TINY_TRAINING,
    ]


@pytest.mark.slow
def test_main_job_on_real_hac_tree(tmp_path, shared_data):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=3)
    damaged = sorted((root / "human" / "videos").glob("*.mp4"))[0]
    truncate(damaged)
    process = run_main_job([*real_tree_args(root, tmp_path), "--data.skip_bad_clips", "true", *ONE_TRIAL], tmp_path)
    assert "| cartoon | human+animal | 1 |" in process.stdout
    check_mlflow(tmp_path, ["cartoon"], num_trials=1, epochs=2, skipped=1)


@pytest.mark.slow
def test_main_job_stops_on_bad_clip(tmp_path, shared_data):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    damaged = sorted((root / "animal" / "videos").glob("*.mp4"))[0]
    truncate(damaged)
    process = run_main_job(real_tree_args(root, tmp_path), tmp_path, expect_success=False)
    assert process.returncode != 0
    assert str(damaged) in process.stderr
    assert "--data.skip_bad_clips true" in process.stderr


def test_main_job_rejects_label_out_of_range(tmp_path, shared_data):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    split_file = root / "HAC_test_only_animal.csv"
    rows = split_file.read_bytes().split(b"\r\n")
    rows[0] = rows[0].rsplit(b",", 1)[0] + b",9"
    split_file.write_bytes(b"\r\n".join(rows))
    process = run_main_job(real_tree_args(root, tmp_path), tmp_path, expect_success=False)
    assert process.returncode != 0
    assert str(split_file) in process.stderr
    assert "row 1" in process.stderr
    assert "label 9" in process.stderr
