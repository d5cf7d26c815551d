"""Training is deterministic: the same config and seed give the same per-epoch metrics.

Two real 2-worker Ray Train runs on CPU over the generated benchmark report every epoch's
metrics through a callback. All metrics but the wall-clock times must be equal. A run with
another seed must differ, so the comparison can fail. Both the domain-balanced batches (the default)
and the streamed batches, which Ray Train splits between the workers, are checked.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import ray.train

from merdg.config import BenchmarkConfig, DataConfig, JobConfig, MERConfig, ModelConfig, TrainConfig
from merdg.data.cache_sets import read_decoded
from merdg.data.datasets import load_dataset
from merdg.data.pipeline import build_decode_cache
from merdg.training.trainer import build_datasets, build_trainer, size_workers


class RecordReports(ray.train.UserCallback):
    """Append every report of every worker to a JSON-lines file (the callback runs in Ray Train's controller)."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics, sort_keys=True) + "\n")


def tiny_job(tmp_path: Path, **train) -> JobConfig:
    # Parts of 2 clips give several read blocks per dataset, so their order matters.
    return JobConfig(
        data=DataConfig(cache_dir=tmp_path / "cache", decode_batch_size=2,
                        benchmark=BenchmarkConfig(num_classes=3, clips_per_class=4)),
        model=ModelConfig(embed_dim=16, width=4, projector_hidden=16, projection_dim=8, fusion_hidden=16),
        train=TrainConfig(epochs=2, batch_size=8, **train),
        output_dir=tmp_path / "runs",
    )


def train_and_record(job: JobConfig, name: str) -> list[list[dict]]:
    """Train ``job`` once (target: the first domain) and return each epoch's reports of all workers."""
    info = load_dataset(job.data)
    cache = build_decode_cache(info.clips, job.data)
    target, sources = info.domains[0], info.domains[1:]
    datasets = build_datasets(cache.path, sources, target, job)
    reports = job.output_dir / f"{name}.jsonl"
    # Each run has its own name: Ray Train resumes a run whose name and storage path it has seen.
    trainer = build_trainer(job, MERConfig(weight=1.0, estimator="koleo"), datasets, info.num_classes,
                            size_workers(job, cluster_cpus=2.0), name=name, storage_path=job.output_dir,
                            callbacks=[RecordReports(str(reports))])
    trainer.fit()
    return [json.loads(line) for line in reports.read_text(encoding="utf-8").splitlines()]


def without_times(epochs: list[list[dict]]) -> str:
    """Return the reports as JSON without wall-clock metrics, so that NaN values compare as equal."""
    kept = [[{key: value for key, value in worker.items() if not key.endswith("time_s")} for worker in epoch]
            for epoch in epochs]
    return json.dumps(kept, sort_keys=True)


def test_read_decoded_keeps_clip_order(tmp_path, ray_local):
    job = tiny_job(tmp_path)
    info = load_dataset(job.data)
    cache = build_decode_cache(info.clips, job.data)

    dataset = read_decoded(cache.path, domains=list(info.domains), splits=["train"])
    clip_ids = [row["clip_id"] for row in dataset.take_all()]

    assert dataset.context.execution_options.preserve_order
    assert clip_ids == sorted(clip.clip_id for clip in info.clips if clip.split == "train")


@pytest.fixture(scope="module")
def balanced_first(tmp_path_factory, ray_local) -> tuple[JobConfig, list[list[dict]]]:
    """One run with the default (balanced) batches and seed 0, shared by the tests that compare against it."""
    job = tiny_job(tmp_path_factory.mktemp("balanced"), balanced_batches=True)
    return job, train_and_record(job, "first")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("balanced", [True, False], ids=["balanced", "streamed"])
def test_same_seed_same_epoch_metrics(tmp_path, ray_local, request, balanced):
    if balanced:
        job, first = request.getfixturevalue("balanced_first")
    else:
        job = tiny_job(tmp_path, balanced_batches=False)
        first = train_and_record(job, "first")

    second = train_and_record(job, "second")

    assert [epoch[0]["epoch"] for epoch in first] == [1, 2]
    assert all(len(epoch) == job.train.num_workers for epoch in first)
    assert {"train_loss", "val_acc", "target_acc"} <= set(first[0][0])
    assert without_times(first) == without_times(second)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_other_seed_other_epoch_metrics(ray_local, balanced_first):
    job, first = balanced_first
    reseeded = dataclasses.replace(job, train=dataclasses.replace(job.train, seed=1))

    other = train_and_record(reseeded, "other")

    assert [epoch[0]["train_loss"] for epoch in other] != [epoch[0]["train_loss"] for epoch in first]
