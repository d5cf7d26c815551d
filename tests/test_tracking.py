"""MLflow adapter on a real local SQLite store: nested runs, params, metrics, artifacts."""

import pytest
from mlflow.tracking import MlflowClient

from merdg.tracking import Tracker, TrackingError, default_tracking_uri, flatten


def test_nested_runs_params_metrics_and_artifacts(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "unit", artifact_location=tmp_path / "artifacts")
    parent = tracker.start_run("sweep")
    child = tracker.start_run("target=a", parent_run_id=parent, tags={"merdg.target": "a"})
    tracker.log_params(child, {"mer": {"weight": 3.0, "estimator": "logdet"}, "note": "x" * 7000})
    tracker.log_metrics(child, {"val_acc": 50.0}, step=1)
    tracker.log_metrics(child, {"val_acc": 60.0}, step=2)
    tracker.log_text(parent, "| a | b |\n", "results/results.md")
    tracker.end_run(child)
    tracker.end_run(parent, "FAILED")

    client = MlflowClient(default_tracking_uri(tmp_path))
    child_run = client.get_run(child)
    assert child_run.data.tags["mlflow.parentRunId"] == parent
    assert child_run.data.params["mer.weight"] == "3.0"
    assert child_run.data.params["note"].endswith("...")
    history = client.get_metric_history(child, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 50.0), (2, 60.0)]
    assert client.get_run(parent).info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(parent, "results")] == ["results/results.md"]


def test_reuses_an_existing_experiment(tmp_path):
    first = Tracker(default_tracking_uri(tmp_path), "same")
    second = Tracker(default_tracking_uri(tmp_path), "same")
    assert first.experiment_id == second.experiment_id


def test_unreachable_server_fails_fast():
    with pytest.raises(TrackingError, match="cannot reach the MLflow tracking server 'http://127.0.0.1:9'"):
        Tracker("http://127.0.0.1:9", "unreachable")


def test_flatten_nested_mappings():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


@pytest.mark.parametrize("uri", ["foo://bar", "file:///tmp/merdg-file-store"])
def test_unsupported_store_uri_raises(uri):
    with pytest.raises(TrackingError, match="cannot use the MLflow tracking store"):
        Tracker(uri, "unit")


def test_empty_experiment_name_raises(tmp_path):
    with pytest.raises(TrackingError, match="--tracking.experiment"):
        Tracker(default_tracking_uri(tmp_path), "")
