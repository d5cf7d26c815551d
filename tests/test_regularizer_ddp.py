"""Global-batch MER under DDP: 2 gloo processes reproduce the single-process gradient."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from merdg.entropy import build_estimator
from merdg.regularizer import MERRegularizer

# Unequal shards exercise the padding of the gather.
SHARD_SIZES = (7, 5)


def make_problem():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(sum(SHARD_SIZES), 5, generator=generator)
    weight = torch.randn(5, 4, generator=generator)
    return inputs, weight


def mer_loss(z: torch.Tensor, scope: str) -> torch.Tensor:
    regularizer = MERRegularizer(build_estimator("logdet"), weight=3.0, normalize="standardize", scope=scope)
    return regularizer({"video": z}).total


def single_process_gradient() -> tuple[float, torch.Tensor]:
    inputs, weight = make_problem()
    weight.requires_grad_(True)
    loss = mer_loss(inputs @ weight, scope="global")
    loss.backward()
    return loss.item(), weight.grad.clone()


def worker(rank: int, port: int, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        inputs, weight = make_problem()
        start = sum(SHARD_SIZES[:rank])
        shard = inputs[start : start + SHARD_SIZES[rank]]
        weight.requires_grad_(True)
        loss = mer_loss(shard @ weight, scope="global")
        loss.backward()
        # DDP averages parameter gradients over workers.
        dist.all_reduce(weight.grad)
        weight.grad /= 2
        results[rank] = (loss.item(), weight.grad.clone())
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(120)
def test_global_scope_matches_single_process_gradient():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(free_port(), results), nprocs=2, join=True)
    expected_loss, expected_grad = single_process_gradient()
    for rank in (0, 1):
        loss, grad = results[rank]
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        assert torch.allclose(grad, expected_grad, rtol=1e-4, atol=1e-6), f"rank {rank}"


def test_local_scope_without_process_group_equals_global():
    inputs, weight = make_problem()
    z = inputs @ weight
    assert torch.isclose(mer_loss(z, "local"), mer_loss(z, "global"))
