"""Domain-balanced training batches: the plan, and real Ray Data parts read as the workers read them."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from merdg.config import ConfigError, JobConfig, TrainConfig
from merdg.training.balanced import _kept_chunks, iter_balanced_batches, plan_balanced_batches
from merdg.training.trainer import _balanced_train_parts, balanced_plan, balanced_part_name

DOMAIN_SIZES = {"human": 23, "animal": 17}
"""Train rows per source domain of the synthetic dataset: unequal, and not multiples of the batch."""


def test_plan_takes_fewest_full_chunks():
    plan = plan_balanced_batches([[12, 9], [11, 9]], worker_batch=4)
    assert plan.per_domain_batch == 2
    assert plan.steps_per_epoch == 4
    assert plan.batch_size == 4


def test_plan_rejects_batch_not_divisible_by_domains():
    with pytest.raises(ValueError, match="equal counts of the 3 source domains"):
        plan_balanced_batches([[10, 10, 10]], worker_batch=4, domains=["a", "b", "c"])


def test_plan_rejects_part_shorter_than_chunk():
    with pytest.raises(ValueError, match=r"\[\[5, 1\]\]"):
        plan_balanced_batches([[5, 1]], worker_batch=4)


def test_kept_chunks_keep_marked_rows_in_order():
    batches = [{"x": torch.arange(0, 3)}, {"x": torch.arange(3, 7)}, {"x": torch.arange(7, 10)}]
    keep = torch.tensor([True, False, True, True, False, True, True, False, True, False])
    chunks = [chunk["x"].tolist() for chunk in _kept_chunks(iter(batches), keep, chunk_size=2)]
    assert chunks == [[0, 2], [3, 5], [6, 8]]


@pytest.fixture(scope="module")
def domain_rows(ray_local):
    """A function returning the synthetic rows of some domains as a Ray Dataset, like ``read_decoded``."""
    rows = []
    for index, (domain, size) in enumerate(DOMAIN_SIZES.items()):
        rows += [{"row": 1000 * index + i, "domain_id": index, "label": i % 3, "domain": domain} for i in range(size)]

    def read(*, domains, splits):
        assert splits == ["train"]
        return ray_local.data.from_items([row for row in rows if row["domain"] in domains])

    return read


def balanced_job(batch_size: int = 8, num_workers: int = 2) -> JobConfig:
    return JobConfig(train=TrainConfig(batch_size=batch_size, num_workers=num_workers, balanced_batches=True))


def epoch_batches(parts, plan, rank, seed):
    shards = [parts[balanced_part_name(index, rank)].iterator() for index in range(plan.num_domains)]
    return list(iter_balanced_batches(shards, plan, rank, seed=seed, shuffle_buffer_rows=4))


def test_balanced_parts_fill_every_batch_equally(domain_rows):
    job = balanced_job()
    parts = _balanced_train_parts(domain_rows, ["row", "domain_id", "label"], list(DOMAIN_SIZES), "cartoon", job)
    plan = balanced_plan(parts, job)
    assert plan.part_sizes == ((12, 9), (11, 8))
    assert plan.per_domain_batch == 2
    assert plan.steps_per_epoch == 4
    for rank in range(2):
        batches = epoch_batches(parts, plan, rank, seed=rank)
        assert len(batches) == plan.steps_per_epoch
        for batch in batches:
            assert Counter(batch["domain_id"].tolist()) == {0: 2, 1: 2}
            assert batch["domain_id"].tolist() == [0, 0, 1, 1]
        rows = torch.cat([batch["row"] for batch in batches]).tolist()
        assert len(set(rows)) == len(rows)


def test_workers_read_disjoint_rows(domain_rows):
    job = balanced_job()
    parts = _balanced_train_parts(domain_rows, ["row", "domain_id", "label"], list(DOMAIN_SIZES), "cartoon", job)
    plan = balanced_plan(parts, job)
    seen = [set(torch.cat([b["row"] for b in epoch_batches(parts, plan, rank, seed=7)]).tolist()) for rank in range(2)]
    assert not seen[0] & seen[1]


def test_each_epoch_keeps_a_new_subset(domain_rows):
    job = balanced_job()
    parts = _balanced_train_parts(domain_rows, ["row", "domain_id", "label"], list(DOMAIN_SIZES), "cartoon", job)
    plan = balanced_plan(parts, job)

    def kept_rows(seed):
        return sorted(torch.cat([b["row"] for b in epoch_batches(parts, plan, 0, seed=seed)]).tolist())

    assert kept_rows(1) == kept_rows(1)
    subsets = {tuple(kept_rows(seed)) for seed in range(6)}
    assert len(subsets) > 1


def test_batch_not_divisible_by_sources_names_flag(domain_rows):
    job = balanced_job(batch_size=6, num_workers=2)
    with pytest.raises(ConfigError, match="--train.balanced_batches false"):
        _balanced_train_parts(domain_rows, ["row", "label"], list(DOMAIN_SIZES), "cartoon", job)


def test_batch_larger_than_parts_names_flag(domain_rows):
    job = balanced_job(batch_size=40, num_workers=2)
    with pytest.raises(ConfigError, match="--train.batch_size 40"):
        _balanced_train_parts(domain_rows, ["row", "label"], list(DOMAIN_SIZES), "cartoon", job)
