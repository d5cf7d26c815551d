"""MLflow outages: a server unreachable at the start stops the job before any work; one that dies mid-run does not.

The servers are real ``mlflow server`` processes on 127.0.0.1, killed with SIGKILL.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from merdg.tracking import UNLOGGED_FILE, UNLOGGED_RUN_PREFIX, Tracker, is_connection_error
from tests.mlflow_server import free_port, mlflow_server

REPO_ROOT = Path(__file__).resolve().parents[1]


def read_unlogged(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_connection_error_found_in_chain():
    try:
        try:
            raise requests.exceptions.ConnectionError("refused")
        except requests.exceptions.ConnectionError:
            # Raised while handling the connection error, as MLflow's REST client does.
            raise MlflowException("API request failed")
    except MlflowException as error:
        wrapped = error
    assert is_connection_error(wrapped)
    assert not is_connection_error(MlflowException("RESOURCE_DOES_NOT_EXIST: run 123"))
    assert not is_connection_error(ValueError("bad value"))


def test_main_job_stops_before_work_without_server(tmp_path):
    port = free_port()
    cache = tmp_path / "cache"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    process = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "tune_all_domains.py"),
         "--output_dir", str(tmp_path / "runs"), "--data.cache_dir", str(cache),
         "--tracking.tracking_uri", f"http://127.0.0.1:{port}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert process.returncode == 2, process.stderr[-4000:]
    assert f"cannot reach the MLflow tracking server 'http://127.0.0.1:{port}'" in process.stderr
    assert "mlflow server --host 127.0.0.1" in process.stderr
    # No benchmark generated, no clip decoded, no Ray started, no trial run.
    assert not cache.exists() or list(cache.iterdir()) == []
    assert "Started a local Ray instance" not in process.stdout + process.stderr
    assert not (tmp_path / "runs" / "tune").exists()


@pytest.mark.slow
def test_server_killed_mid_run_keeps_writes(tmp_path, caplog):
    unlogged = tmp_path / "runs" / UNLOGGED_FILE
    with mlflow_server(tmp_path / "server") as server:
        tracker = Tracker(server.uri, "outage", unlogged_path=unlogged)
        sweep = tracker.start_run("sweep")
        tracker.log_metrics(sweep, {"val_acc": 50.0}, step=1)
        # An error that is not a failed connection still raises.
        with pytest.raises(MlflowException):
            tracker.log_metrics("0" * 32, {"val_acc": 1.0}, step=1)

        server.kill()
        with caplog.at_level(logging.WARNING, logger="merdg.tracking"):
            tracker.log_metrics(sweep, {"val_acc": 60.0}, step=2)
            tracker.log_params(sweep, {"mer": {"weight": 3.0}})
            tracker.set_tags(sweep, {"merdg.selection": "source_val"})
            tracker.log_text(sweep, "| a | b |\n", "results/results.md")
            target = tracker.start_run("target=a", parent_run_id=sweep)
            tracker.log_metrics(target, {"selected_val_acc": 70.0})
            tracker.end_run(target)
            tracker.end_run(sweep)
            # A copy of the tracker, as in a Tune callback restored from its experiment, appends to the same file.
            copy = pickle.loads(pickle.dumps(tracker))
            copy.set_tags(sweep, {"merdg.copy": "true"})
            count = tracker.report_unlogged()

    assert target.startswith(UNLOGGED_RUN_PREFIX)
    records = read_unlogged(unlogged)
    assert [r["kind"] for r in records] == [
        "log_metrics", "log_params", "set_tags", "log_text", "start_run", "log_metrics", "end_run", "end_run",
        "set_tags"]
    assert records[0]["run_id"] == sweep
    assert records[0]["data"]["step"] == 2
    assert records[0]["data"]["metrics"] == {"val_acc": 60.0}
    assert records[1]["data"]["params"] == {"mer.weight": "3.0"}
    assert records[3]["data"]["text"] == "| a | b |\n"
    assert records[4]["run_id"] == target
    assert records[4]["data"]["tags"]["mlflow.parentRunId"] == sweep
    assert records[7]["data"]["status"] == "FINISHED"
    assert tracker.num_unlogged == 8
    assert count == len(records) == 9
    assert any(str(unlogged) in message and "9 MLflow write(s)" in message for message in caplog.messages)

    # What the server took before it died is intact in its store.
    client = MlflowClient(f"sqlite:///{server.store}")
    history = client.get_metric_history(sweep, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 50.0)]
    assert client.get_run(sweep).info.status == "RUNNING"


@pytest.mark.slow
def test_writes_resume_when_server_returns(tmp_path):
    unlogged = tmp_path / UNLOGGED_FILE
    port = free_port()
    with mlflow_server(tmp_path / "server", port=port) as server:
        tracker = Tracker(server.uri, "outage", unlogged_path=unlogged)
        run_id = tracker.start_run("trial")
        server.kill()
        tracker.log_metrics(run_id, {"val_acc": 10.0}, step=1)
    with mlflow_server(tmp_path / "server", port=port):
        tracker.log_metrics(run_id, {"val_acc": 20.0}, step=2)
        tracker.end_run(run_id)
    assert [r["data"]["step"] for r in read_unlogged(unlogged)] == [1]
    assert tracker.num_unlogged == 1
    client = MlflowClient(f"sqlite:///{server.store}")
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")] == [(2, 20.0)]
    assert client.get_run(run_id).info.status == "FINISHED"
