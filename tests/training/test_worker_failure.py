"""A training worker killed with SIGKILL mid-run: Ray Train restarts the workers from the last checkpoint.

The run is a real 2-worker CPU DDP trial on the generated benchmark, driven by Ray Tune as the
sweep drives it, so that the test reads the per-epoch history the sweep reads.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest
import ray.train
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from merdg.config import JobConfig, MERConfig, TrainConfig
from merdg.data.datasets import load_dataset
from merdg.data.pipeline import build_decode_cache
from merdg.training.trainer import build_datasets, build_trainer, size_workers
from tests.training.test_trainer import tiny_job

EPOCHS = 4
KILL_AFTER_EPOCH = 1


class KillOneWorker(ray.train.UserCallback):
    """Kill one training worker process of the run with SIGKILL after the report of ``epoch``, once.

    It runs in Ray Train's controller, a sibling of the workers under the raylet. The controller
    polls one report per worker at a time and a worker's report queue has room for one, so when the
    report of ``epoch`` arrives, the workers are at most one report ahead and are still running.
    """

    def __init__(self, epoch: int, record: Path):
        self.epoch = epoch
        self.record = record
        self.killed = False

    def after_report(self, run_context, metrics, checkpoint):
        if self.killed or metrics[0]["epoch"] != self.epoch:
            return
        raylet = psutil.Process().parent()
        assert raylet.name() == "raylet", f"the controller's parent is {raylet.name()!r}, not the raylet"
        workers = [process for process in raylet.children() if "RayTrainWorker" in " ".join(process.cmdline())]
        assert len(workers) == 2, f"expected the run's 2 training workers, found {workers}"
        victim = max(workers, key=lambda process: process.pid)
        os.kill(victim.pid, signal.SIGKILL)
        self.killed = True
        self.record.write_text(json.dumps({"pid": victim.pid, "after_epoch": self.epoch}))


def train_one_trial(config, *, job: JobConfig, datasets, num_classes: int, record: Path):
    """A Tune function trainable like the sweep's: it drives one TorchTrainer and forwards its reports."""
    trainer = build_trainer(
        job, MERConfig(weight=1.0, estimator="koleo"), datasets, num_classes, size_workers(job, cluster_cpus=2.0),
        name="killed-worker", storage_path=job.output_dir / "train",
        callbacks=[TuneReportCallback(), KillOneWorker(KILL_AFTER_EPOCH, record)],
    )
    trainer.fit()


def test_trainer_sets_worker_restarts(tmp_path):
    job = JobConfig(train=TrainConfig(max_failures=5))
    trainer = build_trainer(job, MERConfig(), {"train": None}, 3, size_workers(job, cluster_cpus=2.0),
                            name="unit", storage_path=tmp_path)
    assert trainer.run_config.failure_config.max_failures == 5


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint(tmp_path, ray_local):
    job = tiny_job(tmp_path)
    job.train.epochs = EPOCHS
    info = load_dataset(job.data)
    cache = build_decode_cache(info.clips, job.data)
    target, sources = info.domains[0], info.domains[1:]
    datasets = build_datasets(cache.path, sources, target, job)
    record = tmp_path / "killed.json"

    trainable = ray.tune.with_parameters(train_one_trial, job=job, datasets=datasets,
                                         num_classes=info.num_classes, record=record)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(trainable, {"CPU": 0.01}),
        run_config=ray.tune.RunConfig(name="killed-worker", storage_path=str(tmp_path / "tune"), verbose=0),
    )
    result = tuner.fit()[0]

    killed = json.loads(record.read_text())
    assert killed["after_epoch"] == KILL_AFTER_EPOCH
    assert not psutil.pid_exists(killed["pid"])
    assert result.error is None
    assert result.metrics["epoch"] == EPOCHS
    # Every epoch once: none lost to the restart, none repeated from the restored checkpoint.
    history = result.metrics_dataframe
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    assert list(history["training_iteration"]) == list(range(1, EPOCHS + 1))
    assert history["checkpoint_path"].notna().all()
