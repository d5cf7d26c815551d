"""Reading the decode cache while training uses the CPUs that the trainer's sizing gives it."""

from __future__ import annotations

import pytest

from merdg.config import DataConfig, JobConfig, TrainConfig, TuneConfig
from merdg.data.hac import read_hac
from merdg.data.cache_sets import READ_TASK_CPUS, read_decoded
from merdg.data.pipeline import build_decode_cache
from merdg.training.trainer import max_concurrent_trials, size_workers
from tests.data.real_tree import build_real_hac_tree


@pytest.mark.parametrize("cluster_cpus", [2.0, 3.0, 4.0, 8.0, 64.0])
@pytest.mark.parametrize("num_workers", [1, 2, 4])
def test_read_tasks_fit_beside_trials(cluster_cpus, num_workers):
    job = JobConfig(train=TrainConfig(num_workers=num_workers), tune=TuneConfig(max_concurrent_trials=64))
    resources = size_workers(job, cluster_cpus)
    trials = max_concurrent_trials(job, resources, cluster_cpus)

    free = cluster_cpus - trials * resources.per_trial_cpus(num_workers)

    assert free >= READ_TASK_CPUS


def test_read_while_a_trial_holds_cpus(shared_data, tmp_path, ray_local):
    """A read started while one trial's workers run on 2 CPUs completes (with 1-CPU tasks it would wait forever)."""
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = read_hac(root)
    cfg = DataConfig(dataset="hac", root=root, cache_dir=tmp_path / "cache", modalities=["audio"], decode_batch_size=2)
    result = build_decode_cache(clips, cfg)
    job = JobConfig(train=TrainConfig(num_workers=2))
    trial_cpus = size_workers(job, 2.0).per_trial_cpus(2)

    @ray_local.remote(num_cpus=trial_cpus)
    class Trial:
        def ready(self) -> bool:
            return True

    trial = Trial.remote()
    ray_local.get(trial.ready.remote())
    try:
        rows = read_decoded(result.path, domains=["human", "animal", "cartoon"]).take_all()
    finally:
        ray_local.kill(trial)

    assert trial_cpus > 1.0
    assert len(rows) == 6
