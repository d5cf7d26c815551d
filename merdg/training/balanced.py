"""Domain-balanced training batches: every worker's batch contains the same number of clips from each source domain.

The official MER-DG code draws each batch with an equal count per source domain. Its epoch ends
when the smallest domain runs out (its sampler's ``drop_last=True``), and each epoch reshuffles
every domain. Here the balance is exact per DDP worker, so the global batch is balanced too:

- The trainer splits each source domain's shuffled train list into one exact part per worker
  (sizes differ by at most one row). These parts are datasets that Ray does not split further.
- Every worker runs ``steps_per_epoch`` steps, the same number on every worker: the fewest full
  per-domain chunks any worker's part of any domain gives. So DDP never waits on a worker that
  ran out of batches.
- Each epoch, every worker reads each of its parts in a locally shuffled order and keeps a random
  subset of exactly ``steps_per_epoch * per_domain_batch`` of its rows (a fresh subset per epoch,
  like the official sampler's reshuffle). Each batch concatenates one chunk of every domain.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch


def balanced_part_name(domain_index: int, rank: int) -> str:
    """Name of worker ``rank``'s part of the ``domain_index``-th source domain's train list among the trainer's datasets."""
    return f"train_domain{domain_index}_{rank}"


@dataclass(frozen=True)
class BalancedPlan:
    """Plan of every worker's domain-balanced batches in one epoch.

    ``part_sizes[rank][domain_index]`` is the row count of that worker's part of that domain.
    """

    num_domains: int
    per_domain_batch: int
    steps_per_epoch: int
    part_sizes: tuple[tuple[int, ...], ...]

    @property
    def batch_size(self) -> int:
        """Rows of one worker's batch."""
        return self.per_domain_batch * self.num_domains


def plan_balanced_batches(part_sizes: Sequence[Sequence[int]], worker_batch: int,
                          domains: Sequence[str] | None = None) -> BalancedPlan:
    """Return the plan for workers whose domain parts have ``part_sizes[rank][domain_index]`` rows.

    ``domains`` names the domains in error messages.

    Raises:
        ValueError: ``worker_batch`` is not a multiple of the number of domains, or some worker's
            part of some domain is shorter than one per-domain chunk.
    """
    num_domains = len(part_sizes[0])
    names = list(domains) if domains is not None else [f"domain {index}" for index in range(num_domains)]
    if worker_batch % num_domains:
        raise ValueError(f"a worker's batch of {worker_batch} rows cannot hold equal counts of the "
                         f"{num_domains} source domains {names}")
    per_domain = worker_batch // num_domains
    steps = min(size // per_domain for sizes in part_sizes for size in sizes)
    if steps == 0:
        raise ValueError(f"a worker's part of a source domain has fewer rows than the {per_domain} that each "
                         f"balanced batch takes from it; rows per worker (one list per worker, one count per "
                         f"domain of {names}): {[list(sizes) for sizes in part_sizes]}")
    return BalancedPlan(num_domains, per_domain, steps, tuple(tuple(sizes) for sizes in part_sizes))


def _rows(columns: Mapping[str, torch.Tensor]) -> int:
    return len(next(iter(columns.values())))


def _take_rows(pieces: list[dict[str, torch.Tensor]], count: int,
               ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Split the first ``count`` rows off ``pieces`` (column dicts with ``count`` rows or more in all).

    Returns the rows and the remaining pieces. Rows within one piece are sliced without a copy.
    """
    selected = []
    remaining = list(pieces)
    needed = count
    while needed:
        piece = remaining.pop(0)
        rows = _rows(piece)
        if rows <= needed:
            selected.append(piece)
            needed -= rows
        else:
            selected.append({name: column[:needed] for name, column in piece.items()})
            remaining.insert(0, {name: column[needed:] for name, column in piece.items()})
            needed = 0
    if len(selected) == 1:
        return selected[0], remaining
    return {name: torch.cat([part[name] for part in selected]) for name in selected[0]}, remaining


def _kept_chunks(batches: Iterator[Mapping[str, torch.Tensor]], keep: torch.Tensor,
                 chunk_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Yield chunks of ``chunk_size`` rows made of the rows of ``batches`` whose position ``keep`` marks."""
    pending: list[dict[str, torch.Tensor]] = []
    pending_rows = 0
    position = 0
    for batch in batches:
        rows = _rows(batch)
        mask = keep[position: position + rows]
        position += rows
        num_selected = int(mask.sum())
        if num_selected == 0:
            continue
        if num_selected < rows:
            indices = mask.nonzero().squeeze(1)
            batch = {name: column.index_select(0, indices) for name, column in batch.items()}
        pending.append(dict(batch))
        pending_rows += num_selected
        while pending_rows >= chunk_size:
            chunk, pending = _take_rows(pending, chunk_size)
            pending_rows -= chunk_size
            yield chunk


def iter_balanced_batches(
    shards: Sequence, plan: BalancedPlan, rank: int, *, seed: int, shuffle_buffer_rows: int,
    device: torch.device | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``plan.steps_per_epoch`` batches of one epoch for worker ``rank``.

    ``shards`` are the worker's ``ray.data.DataIterator`` parts, one per domain in domain-index
    order. Each batch is a dict of columns whose rows are ``per_domain_batch`` rows of the first
    domain, then of the second, and so on. ``seed`` fixes the kept subset and the local shuffle,
    so pass a different one each epoch. ``shuffle_buffer_rows`` is the local shuffle buffer of
    each domain. Each domain is read a whole worker batch at a time, because every Ray batch
    costs a fixed conversion overhead.
    """
    if len(shards) != plan.num_domains:
        raise ValueError(f"{len(shards)} shards for a plan of {plan.num_domains} domains")
    generator = torch.Generator().manual_seed(seed)
    needed = plan.steps_per_epoch * plan.per_domain_batch
    streams = []
    for index, shard in enumerate(shards):
        size = plan.part_sizes[rank][index]
        keep = torch.zeros(size, dtype=torch.bool)
        keep[torch.randperm(size, generator=generator)[:needed]] = True
        batches = shard.iter_torch_batches(
            batch_size=plan.batch_size,
            local_shuffle_buffer_size=shuffle_buffer_rows,
            local_shuffle_seed=seed * 31 + index,
        )
        streams.append(_kept_chunks(iter(batches), keep, plan.per_domain_batch))
    for _ in range(plan.steps_per_epoch):
        chunks = [next(stream) for stream in streams]
        batch = {name: torch.cat([chunk[name] for chunk in chunks]) for name in chunks[0]}
        yield {name: column.to(device) for name, column in batch.items()} if device is not None else batch
