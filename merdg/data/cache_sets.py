"""Read a set of per-modality decode caches as one Ray Dataset, and the folder layout they share.

``merdg.data.pipeline`` writes the caches; this module reads them, and it imports neither PyAV
nor scipy, so a Ray worker that only reads starts quickly.

Layout under ``<cache_dir>/decoded``:

- ``<modality>/<key>/part-NNNNN.parquet``: one modality's rows (``METADATA_COLUMNS`` and the
  modality's tensor column), with ``_COMPLETE.json`` and, when clips failed, ``quarantine.csv``.
- ``sets/<key>/_COMPLETE.json``: one set of modalities. Its ``keys`` map each modality to its
  cache key. Its ``parts`` list the read plan, each entry with ``files`` (modality to the
  Parquet file names that contain the entry's clips) and ``groups`` (the [domain, split] pairs
  among those clips). The first modality's files give each entry's rows.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from merdg.data.clips import DatasetError

logger = logging.getLogger(__name__)

MARKER_FILE = "_COMPLETE.json"
"""File in a cache folder that marks it complete. It stores the files, the counts and the skipped clips."""
QUARANTINE_FILE = "quarantine.csv"
"""File in a cache folder that lists the clips skipped because they could not be decoded."""
SETS_FOLDER = "sets"
"""Folder under ``<cache_dir>/decoded`` that contains the sets of modalities."""
METADATA_COLUMNS = ("clip_id", "domain", "split", "label")
"""Columns of every Parquet part besides the modality's array."""

READ_TASK_CPUS = 0.5
"""CPUs requested by each task of ``read_decoded``.

While trials run, ``merdg.training.trainer`` leaves at least half of its 1-CPU data reserve
free, so a read task of 0.5 CPU can always start and a trial that reads a cache cannot wait
forever for CPUs held by training workers.
"""

READ_TASKS_PER_CPU = 2
"""Tasks of one ``read_decoded`` call per cluster CPU, or one per read plan entry if there are fewer."""

TASK_MAX_RETRIES = 3
"""Retries of a decode or read task whose worker process died.

Ray Data retries such tasks without end by default, so a native crash (in PyAV or pyarrow) that
repeats on every attempt would hang the job instead of failing it.

NOTE: Ray 2.60 takes ``max_retries`` only through ``map_batches``' ``**ray_remote_args``, which
warns that Ray 2.64 removes them.
"""


def modality_cache_dir(cache_dir: str | os.PathLike, modality: str, key: str) -> Path:
    """Return the folder of one modality's decode cache."""
    return Path(cache_dir) / "decoded" / modality / key


def set_dir(cache_dir: str | os.PathLike, key: str) -> Path:
    """Return the folder of one set of modalities."""
    return Path(cache_dir) / "decoded" / SETS_FOLDER / key


def read_marker(folder: Path) -> dict[str, Any] | None:
    """Return the parsed marker file of a cache folder, or None when it is missing or unreadable."""
    try:
        return json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable decode cache marker in %s: %s", folder, exc)
        return None


def read_decoded(
    path: str | os.PathLike,
    *,
    domains: Sequence[str],
    splits: Sequence[str] = ("train", "test"),
    modalities: Sequence[str] | None = None,
) -> ray.data.Dataset:
    """Read a decode cache set as a Ray Dataset of the clips of ``domains`` and ``splits``.

    ``path`` is ``DecodeCacheResult.path``. Each row has the columns ``clip_id``, ``domain``,
    ``split``, ``label`` and one array per modality in ``modalities`` (default: every modality
    of the set). Ray Data tasks read and join the per-modality Parquet parts; this call reads
    only the set's marker. Rows come in clip id order on every run.

    Raises:
        DatasetError: ``path`` contains no complete set, or a modality is not in the set. When a
            Parquet part is missing or damaged, executing the dataset raises Ray's
            ``RayTaskError`` with the ``DatasetError`` message that names the file.
    """
    folder = Path(path)
    marker = read_marker(folder)
    if marker is None or not {"modalities", "keys", "parts"} <= marker.keys():
        raise DatasetError(
            f"no decode cache set at {folder} (no valid {MARKER_FILE}); build it with "
            "merdg.data.pipeline.build_decode_cache and pass DecodeCacheResult.path"
        )
    available = list(marker["modalities"])
    chosen = available if modalities is None else [modality for modality in available if modality in modalities]
    unknown = sorted(set(modalities or []) - set(available))
    if unknown or not chosen:
        raise DatasetError(f"modalities {unknown or list(modalities or [])} are not in the decode cache set {folder}, "
                           f"which contains {available}; build a cache with those modalities")

    requested_groups = {(domain, split) for domain in domains for split in splits}
    parts = [part for part in marker["parts"] if any(tuple(group) in requested_groups for group in part["groups"])]
    # With no matching part, one part is still read (its rows all filtered out), so that the
    # empty dataset has the columns and types that callers select.
    parts = parts or marker["parts"][:1]
    cache_dir = folder.parent.parent.parent
    task_args = {
        "folders": {modality: str(modality_cache_dir(cache_dir, modality, marker["keys"][modality]))
                    for modality in available},
        "base": available[0],
        "modalities": chosen,
        "domains": list(domains),
        "splits": list(splits),
    }
    items = [{"part": json.dumps(part)} for part in parts]
    # Each task starts a Ray Data worker call, which costs more than joining one small part, so
    # a task joins several parts in turn (one output block each).
    num_tasks = min(len(items), READ_TASKS_PER_CPU * _cluster_cpus())
    dataset = ray.data.from_items(items, override_num_blocks=num_tasks).map_batches(
        join_parts,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs=task_args,
        num_cpus=READ_TASK_CPUS,
        max_retries=TASK_MAX_RETRIES,
    )
    # Blocks come out in read plan order, not in the order the tasks finish, so that a seeded
    # random_shuffle or split of the rows gives the same rows on every run. This context is the
    # dataset's own copy, shared only by the datasets derived from it.
    dataset.context.execution_options.preserve_order = True
    return dataset


def _cluster_cpus() -> int:
    """Return the CPUs of the Ray cluster, or of this machine when Ray is not started yet."""
    if ray.is_initialized():
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    return os.cpu_count() or 1


def join_parts(batch: pa.Table, *, folders: dict[str, str], base: str, modalities: list[str],
               domains: list[str], splits: list[str]) -> pa.Table:
    """Join the per-modality Parquet files of each read plan entry in ``batch`` into rows of all modalities.

    The ``base`` modality's files give the rows of ``domains`` and ``splits`` and their order;
    a clip missing from any modality in ``modalities`` is dropped.
    """
    tables = [
        _join_part(json.loads(entry), folders, base, modalities, set(domains), set(splits))
        for entry in batch.column("part").to_pylist()
    ]
    return pa.concat_tables(tables)


def _join_part(entry: dict[str, Any], folders: dict[str, str], base: str, modalities: list[str],
               domains: set[str], splits: set[str]) -> pa.Table:
    base_columns = [*METADATA_COLUMNS, *([base] if base in modalities else [])]
    base_table = _read_files(folders[base], entry["files"][base], base_columns)
    rows = zip(base_table.column("clip_id").to_pylist(), base_table.column("domain").to_pylist(),
               base_table.column("split").to_pylist())
    clip_ids = [clip_id for clip_id, domain, split in rows if domain in domains and split in splits]

    tables = {base: base_table} if base in modalities else {}
    for modality in modalities:
        if modality != base:
            tables[modality] = _read_files(folders[modality], entry["files"][modality], ["clip_id", modality])
    positions = {modality: {clip_id: row for row, clip_id in enumerate(table.column("clip_id").to_pylist())}
                 for modality, table in tables.items()}
    complete_ids = [clip_id for clip_id in clip_ids if all(clip_id in rows for rows in positions.values())]

    base_rows = {clip_id: row for row, clip_id in enumerate(base_table.column("clip_id").to_pylist())}
    columns = {name: _take(base_table.column(name), [base_rows[clip_id] for clip_id in complete_ids]) for name in METADATA_COLUMNS}
    for modality in modalities:
        columns[modality] = _take(tables[modality].column(modality), [positions[modality][clip_id] for clip_id in complete_ids])
    return pa.table(columns)


def _take(column: pa.ChunkedArray, rows: list[int]) -> pa.ChunkedArray:
    """Return the rows of a column, selected with one ``take``.

    NOTE: pyarrow 25 aborts the process when ``filter`` runs on a ``take`` result of a Ray
    tensor column with zero rows, so each column is selected from once, and an empty selection
    is a zero-copy slice.
    """
    if not rows:
        return column.slice(0, 0)
    return column.take(pa.array(rows, pa.int64()))


def _read_files(folder: str, names: Sequence[str], columns: list[str]) -> pa.Table:
    """Read the listed Parquet parts of one modality cache, or raise ``DatasetError`` naming the damage."""
    tables = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            tables.append(pq.ParquetFile(path).read(columns=columns))
        except (OSError, pa.ArrowInvalid) as exc:
            raise DatasetError(
                f"cannot read the decode cache file {path}: {exc}. The cache was changed after it was built; run "
                "build_decode_cache (or the job) again, which detects the damage and decodes the modality again"
            ) from exc
    return pa.concat_tables(tables)
