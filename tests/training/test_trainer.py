"""Ray Train on CPU: a real 2-worker DDP run over a decode cache, and the resource sizing rules.

Every epoch's report is checked end to end through Ray Tune and MLflow in the pipeline tests;
here ``Result.metrics`` is the last epoch's report.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from merdg.config import BenchmarkConfig, DataConfig, JobConfig, MERConfig, ModelConfig, TrainConfig, TuneConfig
from merdg.data.datasets import load_dataset
from merdg.data.pipeline import build_decode_cache
from merdg.training.balanced import balanced_part_name
from merdg.training.loop import accuracy_metrics, eval_dataset_name
from merdg.training.model_diagnostics import DOMAIN_INDEX_COLUMN
from merdg.training.trainer import WorkerResources, build_datasets, build_trainer, max_concurrent_trials, size_workers


def tiny_job(tmp_path: Path, **train) -> JobConfig:
    return JobConfig(
        data=DataConfig(cache_dir=tmp_path / "cache", benchmark=BenchmarkConfig(num_classes=3, clips_per_class=4)),
        model=ModelConfig(embed_dim=16, width=4, projector_hidden=16, projection_dim=8, fusion_hidden=16),
        train=TrainConfig(**{"epochs": 2, "batch_size": 8, **train}),
        output_dir=tmp_path / "runs",
    )


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, ray_local):
    """One 2-epoch DDP run (KoLeo MER, encoders at 0.1x the learning rate), its clips, target and sources."""
    job = tiny_job(tmp_path_factory.mktemp("ddp"), encoder_lr_scale=0.1)
    info = load_dataset(job.data)
    cache = build_decode_cache(info.clips, job.data)
    target, sources = info.domains[0], info.domains[1:]
    datasets = build_datasets(cache.path, sources, target, job)
    resources = size_workers(job, cluster_cpus=2.0)
    trainer = build_trainer(job, MERConfig(weight=1.0, estimator="koleo"), datasets, info.num_classes, resources,
                            name="unit", storage_path=job.output_dir)
    return job, info.clips, target, sources, trainer.fit()


@pytest.mark.slow
def test_ddp_run_exact_eval_counts(ddp_run):
    job, clips, target, sources, result = ddp_run
    expected_val = sum(1 for c in clips if c.domain in sources and c.split == "test")
    expected_target = sum(1 for c in clips if c.domain == target)
    expected_target_test = sum(1 for c in clips if c.domain == target and c.split == "test")
    metrics = result.metrics
    assert metrics["epoch"] == 2
    assert metrics["val_count"] == expected_val
    assert metrics["target_count"] == expected_target
    assert metrics["target_test_count"] == expected_target_test
    assert 0 < expected_target_test < expected_target
    assert 0.0 <= metrics["target_test_acc"] <= 100.0
    assert {"train_ce", "train_mer_video", "train_mer_audio", "train_mer_flow", "train_mer_total"} <= set(metrics)
    assert result.checkpoint is not None


@pytest.mark.slow
def test_ddp_run_reports_finite_diagnostics(ddp_run):
    job, _, _, _, result = ddp_run
    diagnostics = {name: value for name, value in result.metrics.items() if name.startswith("diag_")}
    expected = {"diag_domain_probe_chance", "diag_target_acc_noise", "diag_time_s"}
    for m in job.data.modalities:
        expected |= {f"diag_{m}_{name}" for name in (
            "rankme_val", "rankme_target", "cka_source_target", "procrustes_source_target",
            "domain_probe_acc", "unimodal_target_acc")}
        expected.add(f"diag_target_acc_without_{m}")
    assert set(diagnostics) == expected
    for name, value in diagnostics.items():
        assert math.isfinite(value), name
    assert diagnostics["diag_domain_probe_chance"] == pytest.approx(100.0 / 3)
    assert 0.0 <= diagnostics["diag_target_acc_noise"] <= 100.0


def test_eval_datasets_carry_domain_index(tmp_path, ray_local):
    job = tiny_job(tmp_path)
    info = load_dataset(job.data)
    cache = build_decode_cache(info.clips, job.data)
    target, sources = info.domains[2], info.domains[:2]
    datasets = build_datasets(cache.path, sources, target, job)
    validation = [row for rank in range(2) for row in datasets[eval_dataset_name("val", rank)].take_all()]
    assert sorted({row[DOMAIN_INDEX_COLUMN] for row in validation}) == [0, 1]
    for split in ("target_train", "target_test"):
        rows = datasets[eval_dataset_name(split, 0)].take_all()
        assert rows and {row[DOMAIN_INDEX_COLUMN] for row in rows} == {2}
    assert DOMAIN_INDEX_COLUMN not in datasets[balanced_part_name(0, 0)].columns()


def test_accuracy_metrics_pool_target_lists():
    metrics = accuracy_metrics({"val": (8.0, 10.0), "target_train": (30.0, 40.0), "target_test": (5.0, 20.0)})
    assert metrics["val_acc"] == 80.0
    assert metrics["target_acc"] == 100.0 * 35.0 / 60.0
    assert metrics["target_test_acc"] == 25.0
    assert (metrics["val_count"], metrics["target_count"], metrics["target_test_count"]) == (10.0, 60.0, 20.0)


def test_accuracy_metrics_empty_target_train_list():
    metrics = accuracy_metrics({"val": (1.0, 2.0), "target_train": (0.0, 0.0), "target_test": (3.0, 4.0)})
    assert metrics["target_acc"] == metrics["target_test_acc"] == 75.0


def test_cpu_workers_leave_a_cpu_for_ray_data():
    job = JobConfig(train=TrainConfig(num_workers=2))
    resources = size_workers(job, cluster_cpus=2.0)
    assert resources.cpus_per_worker == 0.5
    assert resources.gpus_per_worker == 0.0
    assert max_concurrent_trials(job, resources, cluster_cpus=2.0) == 1


def test_gpu_workers_and_cpu_override():
    gpu = size_workers(JobConfig(train=TrainConfig(use_gpu=True)), cluster_cpus=64.0)
    assert (gpu.cpus_per_worker, gpu.gpus_per_worker) == (1.0, 1.0)
    manual = size_workers(JobConfig(train=TrainConfig(cpus_per_worker=3.0)), cluster_cpus=64.0)
    assert manual.cpus_per_worker == 3.0


def test_concurrency_is_capped_by_cpus():
    job = JobConfig(train=TrainConfig(num_workers=2), tune=TuneConfig(max_concurrent_trials=8))
    resources = WorkerResources(cpus_per_worker=1.0, gpus_per_worker=0.0)
    assert max_concurrent_trials(job, resources, cluster_cpus=16.0) == 7
    assert max_concurrent_trials(job, resources, cluster_cpus=2.0) == 1
