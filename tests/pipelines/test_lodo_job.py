"""End-to-end: the main job with leave-one-source-domain-out selection on the generated benchmark."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from merdg.tracking import default_tracking_uri
from tests.pipelines.test_tune_all_domains import ONE_TRIAL, TINY_TRAINING, run_main_job, sweep_experiment


@pytest.mark.slow
def test_main_job_selects_by_held_out_source(tmp_path):
    args = ["--data.cache_dir", str(tmp_path / "cache"), "--data.benchmark.num_classes", "3",
            "--data.benchmark.clips_per_class", "4", "--tune.targets", "[retro]", "--tune.selection", "lodo",
            *TINY_TRAINING, *ONE_TRIAL]
    process = run_main_job(args, tmp_path)
    assert "model selection: leave-one-source-domain-out validation" in process.stdout
    assert "| retro | studio+street | 1 |" in process.stdout
    client = MlflowClient(default_tracking_uri(tmp_path / "runs"))
    runs = client.search_runs([sweep_experiment(client).experiment_id])
    search = [r for r in runs if r.data.tags.get("merdg.phase") == "search"]
    assert len(search) == 1
    # One report per epoch, each the mean of the two held-out sources' accuracies.
    history = client.get_metric_history(search[0].info.run_id, "lodo_acc")
    assert len(history) == 2
    studio = client.get_metric_history(search[0].info.run_id, "lodo_acc_studio")
    street = client.get_metric_history(search[0].info.run_id, "lodo_acc_street")
    for mean, one, other in zip(history, studio, street, strict=True):
        assert mean.value == pytest.approx((one.value + other.value) / 2)
    assert all(r.info.status == "FINISHED" for r in runs)
