"""Measure the per-modality decode cache: a cache hit, a one-modality change, and two other designs.

Run from the repository root:

    python benchmarks/decode_cache.py                      # the embedded benchmark, 300 clips
    python benchmarks/decode_cache.py --clips-per-class 4  # 60 clips, for a smoke test

The script generates the embedded benchmark (``--clips-per-class`` clips per class and domain,
5 classes, 3 domains) under a temporary cache folder and starts a local Ray instance with
``--cpus`` CPUs on 127.0.0.1. Then it times, on the real ``build_decode_cache``:

- a cold build that decodes video, audio and flow;
- a cache hit: a second build with the same settings, which decodes nothing;
- a one-modality change: a build with another ``data.audio.nperseg``, which decodes audio only.

Reading is timed as ``build_datasets`` reads one target domain: the sources' train lists, the
sources' test lists and the target's lists, each materialized. Three readers are compared, in
interleaved rounds so that load changes on the machine hit all of them:

- plan: ``read_decoded``, Ray Data tasks that join each part's per-modality Parquet files;
- join: Ray Data's ``Dataset.join`` of the three per-modality caches on ``clip_id`` (needs the
  ``polars`` package; skipped when it is not installed);
- assembled: one Parquet cache of every modality, written once from the per-modality caches
  (the time of that write is reported too) and read with ``ray.data.read_parquet``.

Each reader runs once untimed first. Every figure is the median over ``--repeats`` runs. The
output is a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
import ray.data
from ray.data.expressions import col

from merdg.config import AudioDecodeConfig, BenchmarkConfig, DataConfig
from merdg.data.datasets import load_dataset
from merdg.data.pipeline import DecodeCacheResult, build_decode_cache, read_decoded

Reader = Callable[[list[str], list[str]], ray.data.Dataset]
"""A function that returns the dataset of the given domains and splits, with every modality."""


def time_call(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def read_target(reader: Reader, domains: tuple[str, ...]) -> int:
    """Materialize one target's datasets as ``build_datasets`` reads them; return the rows read."""
    target, sources = domains[0], list(domains[1:])
    rows = 0
    for chosen, splits in ((sources, ["train"]), (sources, ["test"]), ([target], ["train", "test"])):
        rows += reader(chosen, splits).materialize().count()
    return rows


def plan_reader(result: DecodeCacheResult) -> Reader:
    return lambda domains, splits: read_decoded(result.path, domains=domains, splits=splits)


def join_reader(result: DecodeCacheResult, num_partitions: int) -> Reader:
    """Return a reader that joins the per-modality caches with ``Dataset.join``."""

    def read(domains: list[str], splits: list[str]) -> ray.data.Dataset:
        predicate = col("domain").is_in(domains) & col("split").is_in(splits)
        joined = None
        for modality, cache in result.modalities.items():
            dataset = ray.data.read_parquet(str(cache.path), file_extensions=["parquet"]).filter(expr=predicate)
            if joined is None:
                joined = dataset
            else:
                joined = joined.join(dataset.select_columns(["clip_id", modality]), join_type="inner",
                                     num_partitions=num_partitions, on=("clip_id",))
        return joined

    return read


def assembled_reader(folder: Path) -> Reader:
    def read(domains: list[str], splits: list[str]) -> ray.data.Dataset:
        predicate = col("domain").is_in(domains) & col("split").is_in(splits)
        return ray.data.read_parquet(str(folder), file_extensions=["parquet"]).filter(expr=predicate)

    return read


def polars_installed() -> bool:
    try:
        import polars  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-class", type=int, default=20,
                        help="clips per class and domain of the generated benchmark (20 gives 300 clips)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder for the benchmark media and the caches (default: a temporary folder)")
    args = parser.parse_args()

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with tempfile.TemporaryDirectory(prefix="merdg-cache-bench-") as temporary:
        work_dir = args.work_dir or Path(temporary)
        cfg = DataConfig(cache_dir=work_dir, benchmark=BenchmarkConfig(clips_per_class=args.clips_per_class))
        info = load_dataset(cfg)
        ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False,
                 _temp_dir=f"/tmp/ray-bench{os.getpid()}")
        ray.data.DataContext.get_current().enable_progress_bars = False
        run(args, cfg, info.clips, info.domains, work_dir)
        ray.shutdown()


def run(args: argparse.Namespace, cfg: DataConfig, clips: list, domains: tuple[str, ...], work_dir: Path) -> None:
    rows: list[tuple[str, str]] = []

    cold_s, result = time_call(lambda: build_decode_cache(clips, cfg))
    rows.append(("cold build: decode video, audio, flow", f"{cold_s:.1f} s (decoded {result.decoded_counts})"))

    hits = [time_call(lambda: build_decode_cache(clips, cfg)) for _ in range(args.repeats)]
    hit_counts = hits[-1][1].decoded_counts
    rows.append(("cache hit: build", f"{statistics.median(s for s, _ in hits):.2f} s (decoded {hit_counts})"))

    changed_cfg = dataclasses.replace(cfg, audio=AudioDecodeConfig(nperseg=128, noverlap=64))
    change_s, changed = time_call(lambda: build_decode_cache(clips, changed_cfg))
    rows.append(("data.audio.nperseg change: build", f"{change_s:.1f} s (decoded {changed.decoded_counts})"))

    assembled_dir = work_dir / "assembled"
    write_s, _ = time_call(lambda: read_decoded(result.path, domains=list(domains)).write_parquet(str(assembled_dir)))
    rows.append(("assembled design: write one set's cache", f"{write_s:.1f} s"))

    readers: dict[str, Reader] = {"plan (read_decoded)": plan_reader(result),
                                  "assembled (read_parquet)": assembled_reader(assembled_dir)}
    if polars_installed():
        readers["join (Dataset.join)"] = join_reader(result, num_partitions=args.cpus)
    else:
        rows.append(("join (Dataset.join): read one target", "skipped: polars is not installed"))
    times: dict[str, list[float]] = {name: [] for name in readers}
    counts: dict[str, int] = {}
    for reader in readers.values():
        read_target(reader, domains)  # Warm-up: starts Ray Data's workers and loads the page cache.
    for _ in range(args.repeats):
        for name, reader in readers.items():
            seconds, count = time_call(lambda: read_target(reader, domains))
            times[name].append(seconds)
            counts[name] = int(count)
    for name, values in times.items():
        rows.append((f"{name}: read one target", f"{statistics.median(values):.2f} s ({counts[name]} rows)"))

    print(f"Embedded benchmark, {len(clips)} clips; local Ray with {args.cpus} CPUs; "
          f"{platform.machine()}, Python {platform.python_version()}, Ray {ray.__version__}\n")
    print("| measurement | time |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
