"""The Ray Data decode stage and its Parquet cache.

``build_decode_cache`` decodes every clip once with Ray Data tasks and stores the arrays as
Parquet under ``<cache_dir>/decoded/<key>``. The key hashes the clip table, the size and
modification time of every source file, the decoded modalities and their decode settings, so
any change to one of them decodes again into a new folder. ``read_decoded`` reads a cache back
as a Ray Dataset, filtered by domain and split.

Parquet columns: ``clip_id``, ``domain``, ``split`` (strings), ``label`` (int64), and one tensor
column per decoded modality: ``video`` (T, S, S, 3) uint8, ``audio`` (F, frames) float32 and
``flow`` (T, S, S, 2) uint8.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
from ray.data.expressions import col, lit

from merdg.config import DataConfig
from merdg.data.clips import Clip, ClipDecodeError, DatasetError
from merdg.data.decoding import decode_clip, output_shapes

logger = logging.getLogger(__name__)

DECODER_VERSION = "2"
"""Version of the decoding code. It is part of the cache key, so changing it invalidates old caches."""

MARKER_FILE = "_COMPLETE.json"
"""File in a cache folder that marks it complete. It stores the counts and the skipped clips."""
QUARANTINE_FILE = "quarantine.csv"
"""File in a cache folder that lists the clips skipped because they could not be decoded."""

_ERROR_PATH = "_decode_error_path"
_ERROR_REASON = "_decode_error"
_MAX_LISTED_FAILURES = 20


@dataclass
class DecodeCacheResult:
    """Location and contents of a decode cache."""

    path: Path
    """Folder of the Parquet files (also holding the marker file and the quarantine CSV)."""
    num_clips: int
    """Rows in the cache: clips that decoded."""
    num_decoded: int
    """Clips decoded by this call, 0 when an existing cache was reused."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Clips left out because they could not be decoded: dicts with clip_id, path and reason."""
    quarantine_csv: Path | None = None
    """CSV listing the skipped clips, or None when no clip was skipped."""


# ----------------------------------------------------------------------------------------------
# Cache key


def cache_key(clips: Sequence[Clip], cfg: DataConfig) -> str:
    """Return the sha256 hex digest that names the decode cache of ``clips`` under ``cfg``."""
    stats: dict[str, Any] = {}
    folder_listings: dict[str, int] = {}
    for clip in clips:
        for modality in cfg.modalities:
            for path in clip.paths(modality):
                if path not in stats:
                    stats[path] = _source_fingerprint(path, folder_listings)

    content = {
        "decoder_version": DECODER_VERSION,
        "modalities": list(cfg.modalities),
        "decode_config": {modality: dataclasses.asdict(getattr(cfg, modality)) for modality in cfg.modalities},
        "clips": sorted((clip.to_row() for clip in clips), key=lambda row: json.dumps(row, sort_keys=True)),
        "files": stats,
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _source_fingerprint(path: str, folder_listings: dict[str, int]) -> Any:
    """Return (size, mtime_ns) of a file, or the folder's state for an image-sequence pattern."""
    try:
        stat = os.stat(path)
        return [stat.st_size, stat.st_mtime_ns]
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"unreadable: {exc.strerror}"

    if "%" not in os.path.basename(path):
        return "missing"
    # NOTE: an image sequence is fingerprinted by its folder's mtime and entry count, so editing
    # one image in place without adding or removing files keeps the old cache.
    folder = os.path.dirname(path)
    try:
        folder_stat = os.stat(folder)
    except OSError:
        return "missing"
    if folder not in folder_listings:
        folder_listings[folder] = len(os.listdir(folder))
    return ["sequence", folder_stat.st_mtime_ns, folder_listings[folder]]


# ----------------------------------------------------------------------------------------------
# Decode stage (runs in Ray Data tasks)


def _row_to_clip(row: dict[str, Any]) -> Clip:
    values = {}
    for clip_field in dataclasses.fields(Clip):
        value = row[clip_field.name]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        values[clip_field.name] = value
    return Clip(**values)


def decode_batch(batch: dict[str, np.ndarray], modalities: Sequence[str], cfg: DataConfig) -> dict[str, np.ndarray]:
    """Decode a Ray Data batch of clip rows (numpy format) into the cache columns.

    A clip that raises ``ClipDecodeError`` gets zero arrays and its path and reason in the
    ``_decode_error_path`` and ``_decode_error`` columns (empty strings for decoded clips).
    """
    num_rows = len(batch["clip_id"])
    shapes = output_shapes(modalities, cfg)
    arrays = {modality: np.zeros((num_rows, *shape), dtype=dtype) for modality, (shape, dtype) in shapes.items()}
    error_paths = [""] * num_rows
    error_reasons = [""] * num_rows

    for i in range(num_rows):
        clip = _row_to_clip({name: column[i] for name, column in batch.items()})
        try:
            decoded = decode_clip(clip, modalities, cfg)
        except ClipDecodeError as exc:
            error_paths[i], error_reasons[i] = exc.path, exc.reason
            logger.debug("clip %s failed to decode: %s", clip.clip_id, exc)
            continue
        for modality, array in decoded.items():
            arrays[modality][i] = array

    return {
        "clip_id": np.asarray(batch["clip_id"], dtype=object),
        "domain": np.asarray(batch["domain"], dtype=object),
        "split": np.asarray(batch["split"], dtype=object),
        "label": np.asarray(batch["label"], dtype=np.int64),
        **arrays,
        _ERROR_PATH: np.asarray(error_paths, dtype=object),
        _ERROR_REASON: np.asarray(error_reasons, dtype=object),
    }


# ----------------------------------------------------------------------------------------------
# Cache building


def build_decode_cache(clips: Sequence[Clip], cfg: DataConfig) -> DecodeCacheResult:
    """Decode ``clips`` into a Parquet cache with Ray Data, or reuse the complete cache of the same key.

    Ray Data starts a local Ray instance when none is running, so callers that need
    particular Ray settings call ``ray.init`` first.

    Raises:
        DatasetError: ``clips`` is empty or has duplicate ids, a clip failed to decode while
            ``cfg.skip_bad_clips`` is False, or every clip failed to decode.
    """
    clips = list(clips)
    if not clips:
        raise DatasetError("no clips to decode: the split files list no rows for the chosen domains")
    _check_unique_ids(clips)

    key = cache_key(clips, cfg)
    final_dir = Path(cfg.cache_dir) / "decoded" / key
    cached = _read_marker(final_dir)
    if cached is not None and not _cache_intact(final_dir, cached):
        logger.warning("decode cache %s is damaged (Parquet files missing or changed since it was written); "
                       "decoding it again", final_dir)
        shutil.rmtree(final_dir)
        cached = None
    if cached is not None:
        logger.info("decode cache hit: %s (%d clips)", final_dir, cached["num_clips"])
        result = _result_from_marker(final_dir, cached, num_decoded=0)
        _check_skipped_allowed(result.skipped, cfg)
        return result

    logger.info("decode cache miss: decoding %d clips (%s) into %s", len(clips), ", ".join(cfg.modalities), final_dir)
    # NOTE: a process killed mid-build leaves its hidden staging folder behind. It never counts
    # as a cache, but nothing deletes it.
    staging_dir = final_dir.parent / f".{key}.incomplete-{uuid.uuid4().hex[:8]}"
    staging_dir.mkdir(parents=True)
    try:
        marker = _decode_into(staging_dir, clips, cfg, key)
        _publish(staging_dir, final_dir)
    finally:
        if staging_dir.exists():
            shutil.rmtree(staging_dir, ignore_errors=True)

    stored = _read_marker(final_dir) or marker
    return _result_from_marker(final_dir, stored, num_decoded=len(clips))


def _check_unique_ids(clips: list[Clip]) -> None:
    seen: dict[str, Clip] = {}
    for clip in clips:
        if clip.clip_id in seen:
            first = seen[clip.clip_id]
            raise DatasetError(
                f"duplicate clip id {clip.clip_id!r}: {first.source} row {first.row} and "
                f"{clip.source} row {clip.row}; each clip needs its own id"
            )
        seen[clip.clip_id] = clip


def _decode_concurrency(num_batches: int) -> int:
    """Return the number of decode tasks to run at once: one per cluster CPU, at most one per batch."""
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else (os.cpu_count() or 1)
    return max(1, min(num_batches, cpus))


def _decode_into(staging_dir: Path, clips: list[Clip], cfg: DataConfig, key: str) -> dict[str, Any]:
    """Decode every clip, write the good rows and the quarantine CSV; return the marker contents."""
    num_batches = math.ceil(len(clips) / cfg.decode_batch_size)
    # NOTE: the decoded arrays are materialized in the object store before writing, so that the
    # failures are known first. At full clip sizes (32 RGB frames of 224 pixels) that is about
    # 5 MB per clip, which Ray spills to disk when the store is full.
    decoded = (
        ray.data.from_items([clip.to_row() for clip in clips])
        .map_batches(
            decode_batch,
            batch_size=cfg.decode_batch_size,
            batch_format="numpy",
            fn_kwargs={"modalities": list(cfg.modalities), "cfg": cfg},
            num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=_decode_concurrency(num_batches)),
        )
        .materialize()
    )

    status = decoded.select_columns(["clip_id", _ERROR_PATH, _ERROR_REASON]).take_all()
    by_id = {clip.clip_id: clip for clip in clips}
    skipped = [
        {"clip_id": row["clip_id"], "path": row[_ERROR_PATH], "reason": row[_ERROR_REASON]}
        for row in status
        if row[_ERROR_REASON]
    ]
    skipped.sort(key=lambda item: item["clip_id"])
    _check_skipped_allowed(skipped, cfg)
    if len(skipped) == len(clips):
        raise DatasetError(_failure_message(skipped, f"every clip ({len(clips)}) failed to decode", fix=None))

    quarantine_csv = None
    if skipped:
        logger.warning(
            "skipped %d of %d clips that failed to decode (--data.skip_bad_clips true); see %s",
            len(skipped), len(clips), staging_dir.parent / key / QUARANTINE_FILE,
        )
        quarantine_csv = staging_dir / QUARANTINE_FILE
        _write_quarantine(quarantine_csv, skipped, by_id)
        decoded = decoded.filter(expr=col(_ERROR_REASON) == lit(""))

    decoded.drop_columns([_ERROR_PATH, _ERROR_REASON]).write_parquet(str(staging_dir))
    files = {path.name: path.stat().st_size for path in sorted(staging_dir.glob("*.parquet"))}

    marker = {
        "decoder_version": DECODER_VERSION,
        "key": key,
        "modalities": list(cfg.modalities),
        "num_clips": len(clips) - len(skipped),
        "num_failed": len(skipped),
        "skipped": skipped,
        "files": files,
    }
    (staging_dir / MARKER_FILE).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    return marker


def _write_quarantine(path: Path, skipped: list[dict[str, str]], by_id: dict[str, Clip]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip_id", "split_file", "row", "path", "reason"])
        for item in skipped:
            clip = by_id[item["clip_id"]]
            writer.writerow([item["clip_id"], clip.source, clip.row, item["path"], item["reason"]])


def _publish(staging_dir: Path, final_dir: Path) -> None:
    """Rename the finished staging folder to the cache folder in one step."""
    if final_dir.exists() and _read_marker(final_dir) is None:
        # A folder without a marker never comes from the rename below, because the marker is
        # written before it. It is left-over or foreign content, so it is replaced.
        logger.warning("replacing incomplete decode cache folder %s", final_dir)
        shutil.rmtree(final_dir)
    try:
        os.rename(staging_dir, final_dir)
    except OSError:
        if _read_marker(final_dir) is None:
            raise
        # Another process finished the same key first, and its cache has the same content.
        logger.info("decode cache %s was completed by another process; keeping it", final_dir)


def _cache_intact(folder: Path, marker: dict[str, Any]) -> bool:
    """Return whether every Parquet file the marker lists is there with its recorded size, and no other."""
    recorded = marker.get("files")
    if not isinstance(recorded, dict):
        return False
    present = {path.name: path.stat().st_size for path in folder.glob("*.parquet")}
    return present == recorded


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable decode cache marker in %s: %s", folder, exc)
        return None


def _result_from_marker(folder: Path, marker: dict[str, Any], num_decoded: int) -> DecodeCacheResult:
    skipped = list(marker.get("skipped", []))
    quarantine = folder / QUARANTINE_FILE
    return DecodeCacheResult(
        path=folder,
        num_clips=int(marker["num_clips"]),
        num_decoded=num_decoded,
        skipped=skipped,
        quarantine_csv=quarantine if skipped and quarantine.is_file() else None,
    )


def _check_skipped_allowed(skipped: list[dict[str, str]], cfg: DataConfig) -> None:
    if skipped and not cfg.skip_bad_clips:
        raise DatasetError(
            _failure_message(
                skipped,
                f"{len(skipped)} clip(s) failed to decode",
                fix="fix or remove these files, or pass --data.skip_bad_clips true to skip them "
                "(they are then listed in a quarantine CSV in the cache folder)",
            )
        )


def _failure_message(skipped: list[dict[str, str]], summary: str, fix: str | None) -> str:
    lines = [f"{summary}:"]
    lines += [f"  {item['path']}: {item['reason']}" for item in skipped[:_MAX_LISTED_FAILURES]]
    if len(skipped) > _MAX_LISTED_FAILURES:
        lines.append(f"  ... and {len(skipped) - _MAX_LISTED_FAILURES} more")
    if fix:
        lines.append(f"To continue: {fix}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Reading


def read_decoded(
    path: str | os.PathLike, *, domains: Sequence[str], splits: Sequence[str] = ("train", "test")
) -> ray.data.Dataset:
    """Read a decode cache as a Ray Dataset holding only the rows of ``domains`` and ``splits``.

    The filter is a Ray Data expression, which Ray pushes down into the Parquet scan.
    """
    predicate = col("domain").is_in(list(domains)) & col("split").is_in(list(splits))
    return ray.data.read_parquet(str(path), file_extensions=["parquet"]).filter(expr=predicate)
