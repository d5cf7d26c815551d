"""Trial runs through TrialMLflowCallback: Ray Tune's MLflow layout, and a search that outlives its tracking server."""

from __future__ import annotations

import json
import os
import signal

import pytest
import ray.tune
from mlflow.tracking import MlflowClient

from merdg.tracking import UNLOGGED_FILE, Tracker, default_tracking_uri
from merdg.tuning.mlflow_callback import TrialMLflowCallback, numeric_metrics
from tests.mlflow_server import mlflow_server

EPOCHS = 4
KILL_AT_EPOCH = 3


class KillServerAtEpoch(ray.tune.Callback):
    """Kill the tracking server's process group with SIGKILL when a trial reports ``epoch``, before later callbacks run."""

    def __init__(self, server_pid: int, epoch: int):
        self.server_pid = server_pid
        self.epoch = epoch
        self.killed = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result["epoch"] == self.epoch and not self.killed:
            os.killpg(self.server_pid, signal.SIGKILL)
            self.killed = True


def report_epochs(config):
    for epoch in range(1, EPOCHS + 1):
        ray.tune.report({"epoch": epoch, "val_acc": 10.0 * epoch * config["weight"]})


class StandInTrial:
    """The parts of a Tune ``Trial`` that the callback reads: its name and config."""

    def __init__(self, name: str, config: dict):
        self.name = name
        self.config = config

    def __str__(self) -> str:
        return self.name


def test_numeric_metrics_keep_finite_numbers():
    result = {"val_acc": 50, "trial_id": "abc", "config": {"weight": 3.0}, "done": False, "missing": None,
              "loss": float("nan"), "count": "12"}
    assert numeric_metrics(result) == {"val_acc": 50.0, "config/weight": 3.0}


def test_restored_trial_continues_its_run(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "trials")
    parent = tracker.start_run("cell")
    trial = StandInTrial("report_epochs_00000", {"weight": 1.0})
    first = TrialMLflowCallback(tracker, tags={"mlflow.parentRunId": parent})
    first.setup()
    first.log_trial_start(trial)
    first.log_trial_result(1, trial, {"training_iteration": 1, "val_acc": 10.0})

    # Tuner.restore brings back a copy of the callback with no runs, and Tune starts the trial again.
    restored = TrialMLflowCallback(tracker, tags={"mlflow.parentRunId": parent})
    restored.setup()
    restored.log_trial_start(trial)
    restored.log_trial_result(2, trial, {"training_iteration": 2, "val_acc": 20.0})
    restored.log_trial_end(trial)

    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["merdg.resumed"] == "true"
    assert run.info.status == "FINISHED"
    history = tracker.client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 10.0), (2, 20.0)]


def test_trial_failed_before_start_gets_run(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "trials")
    callback = TrialMLflowCallback(tracker, tags={"merdg.target": "a"})
    callback.setup()
    callback.log_trial_end(StandInTrial("report_epochs_00001", {"weight": 2.0}), failed=True)
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert [run.info.run_name for run in runs] == ["report_epochs_00001"]
    assert runs[0].info.status == "FAILED"
    assert runs[0].data.tags["merdg.target"] == "a"
    assert runs[0].data.params == {"weight": "2.0"}


@pytest.mark.slow
def test_search_outlives_killed_server(tmp_path, ray_local):
    unlogged = tmp_path / "runs" / UNLOGGED_FILE
    with mlflow_server(tmp_path / "server") as server:
        tracker = Tracker(server.uri, "trials", unlogged_path=unlogged)
        target_run = tracker.start_run("target=a")
        callback = TrialMLflowCallback(tracker, tags={"mlflow.parentRunId": target_run, "merdg.target": "a"})
        tuner = ray.tune.Tuner(
            report_epochs,
            param_space={"weight": 1.0},
            run_config=ray.tune.RunConfig(
                name="outage", storage_path=str(tmp_path / "tune"), verbose=0,
                callbacks=[KillServerAtEpoch(server.process.pid, KILL_AT_EPOCH), callback],
            ),
        )
        grid = tuner.fit()
        assert server.process.wait() == -signal.SIGKILL

    assert grid.errors == []
    assert list(grid[0].metrics_dataframe["epoch"]) == list(range(1, EPOCHS + 1))

    # The trial's run contains what was logged before the server died.
    client = MlflowClient(f"sqlite:///{server.store}")
    runs = client.search_runs([tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{target_run}'")
    assert len(runs) == 1
    trial_run = runs[0]
    assert trial_run.data.tags["merdg.target"] == "a"
    assert trial_run.data.tags["trial_name"] == trial_run.info.run_name
    assert trial_run.data.params == {"weight": "1.0"}
    history = client.get_metric_history(trial_run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 10.0), (2, 20.0)]
    assert trial_run.info.status == "RUNNING"

    # The rest is in the unlogged file, and reported.
    records = [json.loads(line) for line in unlogged.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["log_metrics", "log_metrics", "end_run"]
    assert {r["run_id"] for r in records} == {trial_run.info.run_id}
    assert [(r["data"]["step"], r["data"]["metrics"]["val_acc"]) for r in records[:2]] == [(3, 30.0), (4, 40.0)]
    assert records[2]["data"]["status"] == "FINISHED"
    assert tracker.report_unlogged() == 3
