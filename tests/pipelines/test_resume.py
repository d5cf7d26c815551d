"""End-to-end: a sweep whose driver is killed mid-sweep resumes with the same command.

The first run is killed (SIGKILL to its whole process group: the driver and the local Ray
processes it started) after its first search trial finished. The second run must restore the
search rather than start it again and leave MLflow with no RUNNING run and no trial run twice.
A third run of the same command must read the finished cell back and train nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from merdg.tracking import default_tracking_uri
from tests.pipelines.test_tune_all_domains import SCRIPT, TINY_TRAINING, run_main_job, sweep_experiment

ARGS = ["--data.benchmark.num_classes", "3", "--data.benchmark.clips_per_class", "4",
        "--tune.targets", "[retro]", *TINY_TRAINING]


def start_and_kill(args: list[str], tmp_path: Path, kill_after: tuple[str, ...]) -> list[str]:
    """Start the main job, and SIGKILL its process group once every line in ``kill_after`` was logged, in order."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--output_dir", str(tmp_path / "runs"), *args],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    seen: list[str] = []
    waiting = list(kill_after)
    deadline = time.monotonic() + 600
    try:
        for line in process.stderr:
            seen.append(line)
            if waiting and waiting[0] in line:
                waiting.pop(0)
            if not waiting or time.monotonic() > deadline:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert not waiting, f"the job ended before logging {waiting}:\n{''.join(seen[-40:])}"
    return seen


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_work(tmp_path):
    args = [*ARGS, "--data.cache_dir", str(tmp_path / "cache")]
    start_and_kill(args, tmp_path, kill_after=("cell 1/1", "search: trial 1/2 finished"))
    client = MlflowClient(default_tracking_uri(tmp_path / "runs"))
    experiment = sweep_experiment(client)
    before = client.search_runs([experiment.experiment_id])
    finished_before = {r.info.run_id for r in before if r.info.status == "FINISHED"}
    assert finished_before, "no trial run had finished before the kill"

    process = run_main_job(args, tmp_path)

    assert "search restored from" in process.stderr
    runs = client.search_runs([experiment.experiment_id])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    # Runs finished before the kill are kept; a trial Tune ran again continued its own run.
    assert finished_before <= {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert len([r for r in runs if r.info.run_name.startswith("sweep-")]) == 1
    cells = [r for r in runs if "merdg.cell_id" in r.data.tags]
    assert len(cells) == 1
    assert cells[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == cells[0].info.run_id]
    finished = [r for r in children if r.info.status == "FINISHED"]
    names = [r.data.tags["trial_name"] for r in finished]
    assert len(names) == len(set(names)), names
    assert sorted(r.data.tags["merdg.phase"] for r in finished) == ["mer-seeds", "search", "search"]
    for run in children:
        if run.info.status != "FINISHED":
            assert run.info.status == "FAILED"
            assert run.data.tags.get("merdg.interrupted") == "true"
    assert "| retro | studio+street | 1 |" in process.stdout

    # The same command once more reads the finished cell back and trains nothing.
    again = run_main_job(args, tmp_path)
    assert "finished in an earlier run of this sweep" in again.stderr
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)
    table = [line for line in again.stdout.splitlines() if line.startswith("| multi_source")]
    assert table == [line for line in process.stdout.splitlines() if line.startswith("| multi_source")]
