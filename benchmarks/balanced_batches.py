"""Time one worker's training-batch iteration per epoch: domain-balanced parts against one streamed part.

Run from the repository root (about 1 minute):

    python benchmarks/balanced_batches.py

The rows have the decoded shapes of the embedded benchmark's default job (video 8x32x32x3 and
flow 8x32x32x2 uint8, audio 129x124 float32) and its training split: two source domains of 75
rows, a global batch of 16 over 2 workers. The script builds worker 0's data the way the trainer
does for each setting and prints the median time of reading one epoch of its batches, the two
settings in alternation so that load changes on the machine hit both. It times data reading
only, not training.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import ray

from merdg.config import JobConfig, TrainConfig
from merdg.training.balanced import iter_balanced_batches
from merdg.training.trainer import _balanced_train_parts, balanced_part_name, balanced_plan, split_exactly

ROWS_PER_DOMAIN = 75
COLUMNS = ["video", "audio", "flow", "label"]


def make_rows() -> list[dict]:
    """Return random rows of two domains 'a' and 'b' in the decoded layout."""
    rng = np.random.default_rng(0)
    return [
        {
            "video": rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8),
            "audio": rng.standard_normal((129, 124), dtype=np.float32),
            "flow": rng.integers(0, 255, (8, 32, 32, 2), dtype=np.uint8),
            "label": index % 5,
            "domain": domain,
        }
        for domain in ("a", "b")
        for index in range(ROWS_PER_DOMAIN)
    ]


def main() -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = make_rows()

    def read(*, domains, splits):
        return ray.data.from_items([row for row in rows if row["domain"] in domains])

    job = JobConfig(train=TrainConfig(batch_size=16, num_workers=2))
    worker_batch = job.train.batch_size // job.train.num_workers
    parts = _balanced_train_parts(read, COLUMNS, ["a", "b"], "c", job)
    plan = balanced_plan(parts, job)
    streamed = read(domains=["a", "b"], splits=["train"]).select_columns(COLUMNS)
    streamed_part = split_exactly(streamed.random_shuffle(seed=0).materialize(), job.train.num_workers)[0]

    def balanced_epoch(seed: int) -> int:
        shards = [parts[balanced_part_name(index, 0)].iterator() for index in range(plan.num_domains)]
        batches = iter_balanced_batches(shards, plan, 0, seed=seed, shuffle_buffer_rows=2 * plan.batch_size)
        return sum(1 for _ in batches)

    def streamed_epoch(seed: int) -> int:
        batches = streamed_part.iterator().iter_torch_batches(
            batch_size=worker_batch, local_shuffle_buffer_size=4 * worker_batch, local_shuffle_seed=seed,
            drop_last=True,
        )
        return sum(1 for _ in batches)

    epochs: dict[str, Callable[[int], int]] = {"balanced": balanced_epoch, "streamed": streamed_epoch}
    times: dict[str, list[float]] = {name: [] for name in epochs}
    counts: dict[str, int] = {}
    for seed in range(11):
        for name, epoch in epochs.items():
            started = time.perf_counter()
            counts[name] = epoch(seed)
            if seed:  # The first round warms up both readers.
                times[name].append(time.perf_counter() - started)
    print("| batches | batches per epoch | median s per epoch |")
    print("|---|---|---|")
    for name in epochs:
        print(f"| {name} | {counts[name]} | {statistics.median(times[name]):.3f} |")


if __name__ == "__main__":
    main()
