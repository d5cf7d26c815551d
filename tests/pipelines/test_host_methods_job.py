"""End-to-end: the main job with a host method other than Fusion (SimMMDG) on the generated benchmark."""

from __future__ import annotations

import pytest

from tests.pipelines.test_tune_all_domains import ONE_TRIAL, TINY_TRAINING, check_mlflow, run_main_job, sweep_experiment

SIMMMDG_TERMS = ("train_ce", "train_contrast", "train_distance", "train_translation", "train_mer_total")


@pytest.mark.slow
def test_main_job_trains_simmmdg(tmp_path):
    args = [
        "--data.cache_dir", str(tmp_path / "cache"),
        "--data.benchmark.num_classes", "3",
        "--data.benchmark.clips_per_class", "4",
        "--data.modalities", "[video, audio]",
        "--tune.targets", "[retro]",
        "--train.method", "simmmdg",
        *TINY_TRAINING,
        *ONE_TRIAL,
    ]
    process = run_main_job(args, tmp_path)
    assert "hosts simmmdg" in process.stdout
    assert "| retro |" in process.stdout
    client = check_mlflow(tmp_path, ["retro"], num_trials=1, epochs=2)
    trials = [run for run in client.search_runs([sweep_experiment(client).experiment_id])
              if run.data.tags.get("merdg.phase") == "search"]
    assert len(trials) == 1
    for trial in trials:
        metrics = trial.data.metrics
        for name in SIMMMDG_TERMS:
            assert name in metrics, f"{name} missing from {sorted(metrics)}"
        for feature in ("video_shared", "video_specific", "audio_shared", "audio_specific"):
            assert f"train_mer_{feature}" in metrics
