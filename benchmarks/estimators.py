"""Measure each entropy estimator's forward plus backward time, and MER's share of a training step.

Run from the repository root:

    python benchmarks/estimators.py                 # full grid, prints Markdown tables
    python benchmarks/estimators.py --quick         # N in {16, 48}, D in {128}, for a smoke test

The grid is N in {16, 48, 256, 1024} rows by D in {128, 512, 2304} dimensions; each cell is the
median over repeats after one warm-up call. The training-step part times one optimizer step of
the default CPU model (three modalities, batch 48, MER on 128-d projections) in a single process,
with and without the MER term and its projectors. The two alternate, so that load changes on the
machine hit both, and the script reports MER's share of the step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from merdg.config import DataConfig, ModelConfig
from merdg.entropy import ESTIMATORS, build_estimator
from merdg.methods import build_method
from merdg.models import MultimodalModel
from merdg.regularizer import MERRegularizer

ROWS = (16, 48, 256, 1024)
DIMS = (128, 512, 2304)


def median_seconds(step: Callable[[], None], min_repeats: int = 3, budget_s: float = 1.0) -> float:
    """Return the median wall time of ``step`` after one warm-up call."""
    step()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - started < budget_s and len(times) < 50):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def estimator_step(name: str, rows: int, dims: int) -> Callable[[], None]:
    estimator = build_estimator(name)
    z = torch.randn(rows, dims, generator=torch.Generator().manual_seed(0)).requires_grad_(True)

    def step() -> None:
        z.grad = None
        estimator(z).backward()

    return step


def estimator_table(rows: tuple[int, ...], dims: tuple[int, ...]) -> str:
    header = "| estimator | " + " | ".join(f"N={n}, D={d}" for n in rows for d in dims) + " |"
    lines = [header, "|" + "---|" * (1 + len(rows) * len(dims))]
    for name in sorted(ESTIMATORS):
        cells = [f"{1000 * median_seconds(estimator_step(name, n, d)):.2f}" for n in rows for d in dims]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_step(estimator: str | None, batch: int) -> Callable[[], None]:
    """Return one forward, backward and Adam step of the default CPU model, with or without MER."""
    torch.manual_seed(0)
    modalities = ["video", "audio", "flow"]
    data = DataConfig()
    video, flow, audio = data.video, data.flow, data.audio
    inputs = {
        "video": torch.randn(batch, 3, video.num_frames, video.crop_size, video.crop_size),
        "flow": torch.randn(batch, 2, flow.num_frames, flow.crop_size, flow.crop_size),
        "audio": torch.randn(batch, 1, *audio.spectrogram_shape),
    }
    labels = torch.randint(0, 5, (batch,))
    model = MultimodalModel(modalities, 5, ModelConfig(), with_projectors=estimator is not None)
    method = build_method("fusion", modalities, mer_enabled=estimator is not None)
    regularizer = MERRegularizer(build_estimator(estimator), 3.0) if estimator else None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        output = model(inputs)
        loss = torch.stack(list(method.loss_terms(output, labels).values())).sum()
        if regularizer is not None:
            loss = loss + regularizer(method.entropy_features(output)).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def paired_medians(first: Callable[[], None], second: Callable[[], None], rounds: int) -> tuple[float, float]:
    """Time two steps in alternation, so that load changes on the machine hit both alike."""
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for step, bucket in ((first, times[0]), (second, times[1])):
            begin = time.perf_counter()
            step()
            bucket.append(time.perf_counter() - begin)
    return statistics.median(times[0]), statistics.median(times[1])


def share_table(batch: int, rounds: int) -> str:
    lines = [
        "| estimator | plain Fusion step (ms) | step with MER (ms) | MER share of the step |",
        "|---|---|---|---|",
    ]
    baseline_step = training_step(None, batch)
    for name in sorted(ESTIMATORS):
        baseline, with_mer = paired_medians(baseline_step, training_step(name, batch), rounds)
        share = 100 * (with_mer - baseline) / with_mer
        lines.append(f"| {name} | {1000 * baseline:.1f} | {1000 * with_mer:.1f} | {share:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="time N in {16, 48} and D = 128 only")
    parser.add_argument("--batch", type=int, default=48, help="batch size of the training-step timing")
    parser.add_argument("--rounds", type=int, default=15, help="alternating timing rounds per estimator")
    args = parser.parse_args()
    rows, dims = ((16, 48), (128,)) if args.quick else (ROWS, DIMS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print()
    print("Forward plus backward time per call (ms), float32 on the CPU:")
    print()
    print(estimator_table(rows, dims))
    print()
    print(f"Training step of the default CPU model, 3 modalities, batch {args.batch}, MER on 128-d projections:")
    print()
    print(share_table(args.batch, args.rounds))


if __name__ == "__main__":
    main()
