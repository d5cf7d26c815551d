"""A real 2-worker DDP run of CMRF (its averaged teacher, distillation from the first step) with LARS
and domain-balanced batches over a decode cache."""

from __future__ import annotations

import dataclasses

import pytest

from merdg.config import CMRFConfig, MERConfig, MethodsConfig
from merdg.data.datasets import load_dataset
from merdg.data.pipeline import build_decode_cache
from merdg.training.trainer import balanced_plan, build_datasets, build_trainer, size_workers
from tests.training.test_trainer import tiny_job


@pytest.mark.slow
def test_cmrf_ddp_run_reports_every_term(tmp_path, ray_local):
    job = tiny_job(tmp_path, method="cmrf", optimizer="lars", lr=0.5, balanced_batches=True)
    job = dataclasses.replace(job, methods=MethodsConfig(
        cmrf=CMRFConfig(start_step=0, teacher_average="exponential", ema_momentum=0.9)))
    info = load_dataset(job.data)
    cache = build_decode_cache(info.clips, job.data)
    target, sources = info.domains[0], info.domains[1:]
    datasets = build_datasets(cache.path, sources, target, job)
    assert "train" not in datasets
    plan = balanced_plan(datasets, job)
    assert plan.num_domains == len(sources)
    assert plan.batch_size == job.train.batch_size // job.train.num_workers

    trainer = build_trainer(job, MERConfig(weight=1.0, estimator="logdet"), datasets, info.num_classes,
                            size_workers(job, cluster_cpus=2.0), name="cmrf", storage_path=job.output_dir)
    metrics = trainer.fit().metrics
    assert metrics["epoch"] == 2
    expected = {"train_loss", "train_ce", "train_unimodal_ce", "train_contrast", "train_distill", "train_mer_total"}
    expected |= {f"train_mer_{m}" for m in job.data.modalities}
    assert expected <= set(metrics)
    assert metrics["train_distill"] > 0.0
    assert 0.0 <= metrics["target_acc"] <= 100.0
