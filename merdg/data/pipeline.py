"""The Ray Data decode stage and its per-modality Parquet caches.

``build_decode_cache`` decodes each modality of every clip once with Ray Data tasks and keeps
one cache per modality, so that changing one modality's decode settings decodes that modality
again and nothing else:

- ``<cache_dir>/decoded/<modality>/<key>/`` contains one modality's arrays. Its key hashes
  what the arrays depend on: the clip table (every ``Clip.to_row()`` field except those named
  after another modality, such as its path or its span), the size and modification time of
  this modality's source files, this modality's decode settings and ``DECODER_VERSION``. The
  clips, sorted by id, are cut into parts of ``decode_batch_size`` clips. A Ray Data task
  decodes one part and writes it as ``part-NNNNN.parquet`` with the columns ``clip_id``,
  ``domain``, ``split`` (strings), ``label`` (int64) and the modality's tensor column:
  ``video`` (T, S, S, 3) uint8, ``audio`` (F, frames) float32 or ``flow`` (T, S, S, 2) uint8.
  Only clips that decoded have a row.
- ``<cache_dir>/decoded/sets/<key>/`` describes one set of modalities: the per-modality caches
  it combines, the clips that decoded in all of them, and a read plan. Each plan entry is one
  part of the first modality, with the Parquet files of every modality that contain its clips
  and the (domain, split) pairs among them. Building it reads no arrays.

``read_decoded`` (in ``merdg.data.cache_sets``, which the Ray read tasks import without PyAV
or scipy) hands the plan entries that contain the requested domains and splits to Ray Data
tasks, about two per cluster CPU. For each entry, a task reads that part's files of every
modality with pyarrow and joins them on ``clip_id`` into rows holding all modalities, so the
driver never loads arrays. Parts of different modalities contain the same clips whenever they
were decoded with the same ``decode_batch_size``, so a task then reads one file per modality.
Otherwise it reads the few files that contain its clips, and the rows are still correct.

Measured with ``benchmarks/decode_cache.py`` on the embedded benchmark (300 clips at the
default sizes), local Ray with 2 CPUs on a 2-core VM that other jobs loaded (load average 9 to
17, so repeated runs differ by up to 2x): decoding all three modalities took 11.8 s; a cache
hit, 0.04 s, decoding nothing; a change of ``data.audio.nperseg``, 5.8 s, decoding audio only,
where a single cache for all modalities decodes all three again. Reading one target's sets as
``build_datasets`` does took 4.6 s with ``read_decoded``. Two other designs were measured:

- Ray Data's ``Dataset.join`` on ``clip_id`` (Ray 2.60) took 85 s for the same read. It needs
  the ``polars`` package, which is not a dependency, hash-shuffles every array through the
  object store, and starts aggregator actors that hold CPUs for the whole join. On a 2-CPU
  machine those are the CPUs that training leaves for Ray Data.
- One assembled Parquet cache per set of modalities, written from the per-modality caches, took
  2.0 s to write and 6.8 s to read with ``ray.data.read_parquet``. It writes every array of a
  new set a second time and keeps two copies on disk, and it did not read faster.

A modality cache is written in a hidden staging folder that is renamed into place in one step
once complete, and its marker file (``_COMPLETE.json``) records its files and their sizes. A
modality cache whose files are missing or changed is decoded again. A set's marker and
quarantine CSV are each written to a temporary file and renamed over the old one. Clips that
fail to decode raise ``DatasetError`` unless ``skip_bad_clips`` is set. Then they are left out,
listed in the marker and in ``quarantine.csv`` of the modality's cache and of the set.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
from ray.data.extensions import ArrowTensorArray

from merdg.config import MODALITIES, DataConfig
from merdg.data.cache_sets import (
    MARKER_FILE,
    QUARANTINE_FILE,
    TASK_MAX_RETRIES,
    modality_cache_dir,
    read_decoded,
    read_marker,
    set_dir,
)
from merdg.data.clips import CacheWriteError, Clip, ClipDecodeError, DatasetError
from merdg.data.decoding import decode_clip

logger = logging.getLogger(__name__)

DECODER_VERSION = "3"
"""Version of the decoding code and cache layout. It is part of every cache key, so changing it invalidates old caches."""

_MAX_LISTED_FAILURES = 20
_QUARANTINE_COLUMNS = ["clip_id", "modality", "split_file", "row", "path", "reason"]


@dataclass
class ModalityCache:
    """One modality's decode cache as ``build_decode_cache`` found or wrote it."""

    modality: str
    key: str
    """Hex digest naming the cache folder."""
    path: Path
    """Folder of the modality's Parquet parts, marker file and quarantine CSV."""
    num_clips: int
    """Clips that decoded, one row each."""
    num_decoded: int
    """Clips decoded by this call: all of the clip table, or 0 when the cache was reused."""
    num_reused: int
    """Clips whose result came from an existing cache: all of the clip table, or 0."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Clips that failed to decode: dicts with clip_id, modality, path and reason."""


@dataclass
class DecodeCacheResult:
    """Location and contents of the decode cache of one set of modalities."""

    path: Path
    """Folder of the set, which ``read_decoded`` reads: its marker file with the read plan, and its quarantine CSV."""
    num_clips: int
    """Clips that decoded in every modality: the rows ``read_decoded`` can return."""
    modalities: dict[str, ModalityCache]
    """Per-modality caches by modality name, with their decoded and reused counts."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Failures of every modality, sorted by clip id: dicts with clip_id, modality, path and reason."""
    quarantine_csv: Path | None = None
    """CSV listing the skipped clips, or None when no clip was skipped."""

    @property
    def num_decoded(self) -> int:
        """Clips decoded by this call in at least one modality."""
        return max((cache.num_decoded for cache in self.modalities.values()), default=0)

    @property
    def num_skipped(self) -> int:
        """Clips left out because at least one of their modalities failed to decode."""
        return len({item["clip_id"] for item in self.skipped})

    @property
    def decoded_counts(self) -> dict[str, int]:
        """Clips decoded by this call, by modality."""
        return {name: cache.num_decoded for name, cache in self.modalities.items()}

    @property
    def reused_counts(self) -> dict[str, int]:
        """Clips reused from an existing cache, by modality."""
        return {name: cache.num_reused for name, cache in self.modalities.items()}


# ----------------------------------------------------------------------------------------------
# Cache keys


def modality_key(clips: Sequence[Clip], modality: str, cfg: DataConfig,
                 folder_listings: dict[str, int] | None = None) -> str:
    """Return the sha256 hex digest that names ``modality``'s decode cache of ``clips`` under ``cfg``.

    The key covers every field of ``Clip.to_row()`` except those named after another modality,
    so a field added to ``Clip`` enters every key unless its name starts with another modality's. ``folder_listings`` caches
    image-sequence folder sizes between calls. The flow key also covers the video files, because
    decoding checks each clip's flow length against its video (``check_flow_length``).
    """
    listings = {} if folder_listings is None else folder_listings
    files: dict[str, Any] = {}
    video_files: dict[str, Any] = {}
    rows = []
    for clip in clips:
        for path in clip.paths(modality):
            if path not in files:
                files[path] = _source_fingerprint(path, listings)
        if modality == "flow" and clip.video and clip.video not in video_files:
            video_files[clip.video] = _source_fingerprint(clip.video, listings)
        rows.append(_key_row(clip, modality))

    content = {
        "decoder_version": DECODER_VERSION,
        "modality": modality,
        "decode_config": dataclasses.asdict(getattr(cfg, modality)),
        "clips": sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str)),
        "files": files,
    }
    if modality == "flow":
        content["video_files"] = video_files
    return _digest(content)


def set_key(keys: dict[str, str]) -> str:
    """Return the sha256 hex digest that names the set combining the modality caches ``keys``."""
    return _digest({"decoder_version": DECODER_VERSION, "keys": keys})


def _digest(content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _key_row(clip: Clip, modality: str) -> dict[str, Any]:
    """Return the clip's row without the fields of other modalities.

    A field belongs to a modality when it is named after it (``audio``, ``audio_start``,
    ``flow_x``, ``flow_start_frame``). Every other field, such as ``start`` or a new one, stays.
    """
    others = [name for name in MODALITIES if name != modality]
    return {
        name: value
        for name, value in clip.to_row().items()
        if not any(name == other or name.startswith(f"{other}_") for other in others)
    }


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


def decode_parts(batch: dict[str, np.ndarray], *, staging: dict[str, str], cfg: DataConfig) -> dict[str, np.ndarray]:
    """Decode the parts in a Ray Data batch and write each modality's rows as a Parquet file.

    ``batch`` has a ``part`` (index) and a ``clips`` (JSON list of ``Clip.to_row()`` dicts)
    column. ``staging`` maps each modality to decode to the folder its files go to. Returns one
    status row per part and modality: the file written (empty when no clip decoded), its size in
    bytes, the ids of its rows (JSON), the failures (JSON list of [clip_id, path, reason]) and
    the error of writing the file (empty when it was written).

    A failed write (a full disk, say) is returned rather than raised, because Ray Data does not
    pass the exception's type back to the driver, which raises ``CacheWriteError`` from it.
    """
    columns = ("part", "modality", "file", "bytes", "clip_ids", "failures", "write_error")
    status: dict[str, list[Any]] = {name: [] for name in columns}
    for part, clips_json in zip(batch["part"], batch["clips"]):
        clips = [_clip_from_row(row) for row in json.loads(str(clips_json))]
        for modality, folder in staging.items():
            written, failures = _decode_modality(clips, modality, cfg)
            file_name, size, write_error = "", 0, ""
            if written:
                try:
                    file_name, size = _write_part(Path(folder), int(part), modality, written)
                except OSError as exc:
                    write_error = f"writing {Path(folder) / _part_name(int(part))} failed: {exc}"
                    logger.error("%s", write_error)
            status["part"].append(int(part))
            status["modality"].append(modality)
            status["file"].append(file_name)
            status["bytes"].append(size)
            status["clip_ids"].append(json.dumps([clip.clip_id for clip, _ in written] if not write_error else []))
            status["failures"].append(json.dumps(failures))
            status["write_error"].append(write_error)
    return {
        name: np.asarray(values, dtype=np.int64 if name in ("part", "bytes") else object)
        for name, values in status.items()
    }


def _clip_from_row(row: dict[str, Any]) -> Clip:
    return Clip(**{clip_field.name: row[clip_field.name] for clip_field in dataclasses.fields(Clip)})


def _decode_modality(clips: list[Clip], modality: str, cfg: DataConfig) -> tuple[list[tuple[Clip, np.ndarray]], list[list[str]]]:
    """Decode one modality of ``clips``; return the decoded (clip, array) pairs and the failures."""
    decoded = []
    failures = []
    for clip in clips:
        try:
            decoded.append((clip, decode_clip(clip, [modality], cfg)[modality]))
        except ClipDecodeError as exc:
            failures.append([clip.clip_id, exc.path, exc.reason])
            logger.debug("clip %s failed to decode %s: %s", clip.clip_id, modality, exc)
        except Exception as exc:  # noqa: BLE001 - one clip's unforeseen failure must not end the task
            # Reported like a decode failure (an error, or a quarantined clip with skipping on),
            # so that one odd file cannot crash the decode stage.
            logger.warning("clip %s: unexpected error decoding %s", clip.clip_id, modality, exc_info=True)
            path = ", ".join(clip.paths(modality)) or clip.clip_id
            failures.append([clip.clip_id, path, f"unexpected decoding error: {type(exc).__name__}: {exc}"])
    return decoded, failures


def _write_part(folder: Path, part: int, modality: str, rows: list[tuple[Clip, np.ndarray]]) -> tuple[str, int]:
    """Write one part of a modality as Parquet; return the file name and its size in bytes."""
    clips = [clip for clip, _ in rows]
    table = pa.table({
        "clip_id": pa.array([clip.clip_id for clip in clips], pa.string()),
        "domain": pa.array([clip.domain for clip in clips], pa.string()),
        "split": pa.array([clip.split for clip in clips], pa.string()),
        "label": pa.array([clip.label for clip in clips], pa.int64()),
        modality: ArrowTensorArray.from_numpy(np.stack([array for _, array in rows])),
    })
    name = _part_name(part)
    pq.write_table(table, folder / name)
    return name, (folder / name).stat().st_size


def _part_name(part: int) -> str:
    return f"part-{part:05d}.parquet"


# ----------------------------------------------------------------------------------------------
# Cache building


def build_decode_cache(clips: Sequence[Clip], cfg: DataConfig) -> DecodeCacheResult:
    """Decode the modalities of ``clips`` that have no complete cache, then describe the set.

    Each modality in ``cfg.modalities`` whose cache exists and is intact is reused; the others
    are decoded together, one Ray Data task per part. Ray Data starts a local Ray instance when
    none is running, so callers that need particular Ray settings call ``ray.init`` first.

    A cache folder that cannot be written is no error while every modality's cache and the set
    are complete there, because nothing is written then.

    Raises:
        DatasetError: ``clips`` is empty or has duplicate ids, a clip failed to decode while
            ``cfg.skip_bad_clips`` is False, or no clip decoded in every modality. A modality
            cache without failures is kept even when another modality's failures raise.
        CacheWriteError: a file or folder under ``cfg.cache_dir`` cannot be written (no
            permission, a read-only file system, a full disk). The staging folders of the
            decode are deleted, so no partial modality cache is left behind.
    """
    clips = sorted(clips, key=lambda clip: clip.clip_id)
    if not clips:
        raise DatasetError("no clips to decode: the split files list no rows for the chosen domains")
    _check_unique_ids(clips)

    listings: dict[str, int] = {}
    keys = {modality: modality_key(clips, modality, cfg, listings) for modality in cfg.modalities}
    markers: dict[str, dict[str, Any]] = {}
    for modality, key in keys.items():
        with _cache_writes(cfg.cache_dir):
            marker = _intact_marker(modality_cache_dir(cfg.cache_dir, modality, key))
        if marker is not None:
            markers[modality] = marker
    missing = {modality: key for modality, key in keys.items() if modality not in markers}

    if missing:
        logger.info("decode cache: decoding %s of %d clips (reusing %s)", ", ".join(missing), len(clips),
                    ", ".join(markers) or "nothing")
        markers.update(_decode_missing(clips, missing, cfg))
    caches = {
        modality: _modality_cache(cfg.cache_dir, markers[modality], decoded=modality in missing, num_clips=len(clips))
        for modality in cfg.modalities
    }

    skipped = sorted((item for cache in caches.values() for item in cache.skipped),
                     key=lambda item: (item["clip_id"], item["modality"]))
    _check_skipped_allowed(skipped, cfg)
    with _cache_writes(cfg.cache_dir):
        path, set_marker = _write_set(cfg.cache_dir, keys, markers, clips)
    quarantine = path / QUARANTINE_FILE
    return DecodeCacheResult(
        path=path,
        num_clips=int(set_marker["num_clips"]),
        modalities=caches,
        skipped=skipped,
        quarantine_csv=quarantine if skipped and quarantine.is_file() else None,
    )


@contextlib.contextmanager
def _cache_writes(cache_dir: Path) -> Iterator[None]:
    """Turn an ``OSError`` of the cache writes inside into a ``CacheWriteError`` that names the cache folder."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise CacheWriteError(str(cache_dir), f"{exc.strerror or exc}{where}") from exc


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


def _intact_marker(folder: Path) -> dict[str, Any] | None:
    """Return the marker of a complete, undamaged cache folder; delete a damaged one and return None."""
    marker = read_marker(folder)
    if marker is None:
        return None
    if not _cache_intact(folder, marker):
        logger.warning("decode cache %s is damaged (Parquet files missing or changed since it was written); "
                       "decoding it again", folder)
        shutil.rmtree(folder)
        return None
    return marker


def _modality_cache(cache_dir: Path, marker: dict[str, Any], *, decoded: bool, num_clips: int) -> ModalityCache:
    modality = marker["modality"]
    skipped = [{"clip_id": item["clip_id"], "modality": modality, "path": item["path"], "reason": item["reason"]}
               for item in marker.get("skipped", [])]
    return ModalityCache(
        modality=modality,
        key=marker["key"],
        path=modality_cache_dir(cache_dir, modality, marker["key"]),
        num_clips=int(marker["num_clips"]),
        num_decoded=num_clips if decoded else 0,
        num_reused=0 if decoded else num_clips,
        skipped=skipped,
    )


def _partition(clips: list[Clip], clips_per_part: int) -> list[list[Clip]]:
    return [clips[start : start + clips_per_part] for start in range(0, len(clips), clips_per_part)]


def _decode_concurrency(num_parts: int) -> int:
    """Return the number of decode tasks to run at once: one per cluster CPU, at most one per part."""
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else (os.cpu_count() or 1)
    return max(1, min(num_parts, cpus))


def _decode_missing(clips: list[Clip], missing: dict[str, str], cfg: DataConfig) -> dict[str, dict[str, Any]]:
    """Decode the ``missing`` modalities into staging folders and publish them; return their markers.

    A modality's cache is published when no clip failed or when ``cfg.skip_bad_clips`` allows
    failures; otherwise its staging folder is deleted (and the caller raises).
    """
    final_dirs = {modality: modality_cache_dir(cfg.cache_dir, modality, key) for modality, key in missing.items()}
    # NOTE: a process killed mid-build leaves its hidden staging folders behind. They never count
    # as a cache, but nothing deletes them.
    staging = {modality: folder.parent / f".{folder.name}.incomplete-{uuid.uuid4().hex[:8]}"
               for modality, folder in final_dirs.items()}
    try:
        with _cache_writes(cfg.cache_dir):
            for folder in staging.values():
                folder.mkdir(parents=True)
        status = _run_decode_tasks(clips, staging, cfg)
        _check_part_writes(status, cfg.cache_dir)
        by_id = {clip.clip_id: clip for clip in clips}
        markers = {}
        for modality, key in missing.items():
            with _cache_writes(cfg.cache_dir):
                markers[modality] = _finish_staging(staging[modality], modality, key, status[modality], by_id)
                if not markers[modality]["skipped"] or cfg.skip_bad_clips:
                    _publish(staging[modality], final_dirs[modality])
                    markers[modality] = read_marker(final_dirs[modality]) or markers[modality]
    finally:
        for folder in staging.values():
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
    return markers


def _run_decode_tasks(clips: list[Clip], staging: dict[str, Path], cfg: DataConfig) -> dict[str, list[dict[str, Any]]]:
    """Run one Ray Data decode task per part; return the status rows by modality."""
    parts = _partition(clips, cfg.decode_batch_size)
    items = [{"part": index, "clips": json.dumps([clip.to_row() for clip in part])} for index, part in enumerate(parts)]
    status_rows = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(
            decode_parts,
            batch_size=1,
            batch_format="numpy",
            fn_kwargs={"staging": {modality: str(folder) for modality, folder in staging.items()}, "cfg": cfg},
            num_cpus=1,
            max_retries=TASK_MAX_RETRIES,
            compute=ray.data.TaskPoolStrategy(size=_decode_concurrency(len(parts))),
        )
        .take_all()
    )
    by_modality: dict[str, list[dict[str, Any]]] = {modality: [] for modality in staging}
    for row in status_rows:
        by_modality[str(row["modality"])].append(row)
    return by_modality


def _check_part_writes(status: dict[str, list[dict[str, Any]]], cache_dir: Path) -> None:
    """Raise ``CacheWriteError`` when a decode task could not write its Parquet file.

    NOTE: the decode tasks that run after a failed write still decode their parts, so on a full
    disk the error comes once every part has been tried.
    """
    errors = [str(row["write_error"]) for rows in status.values() for row in rows if row["write_error"]]
    if errors:
        more = f" (and {len(errors) - 1} more Parquet parts)" if len(errors) > 1 else ""
        raise CacheWriteError(str(cache_dir), errors[0] + more)


def _finish_staging(folder: Path, modality: str, key: str, status: list[dict[str, Any]],
                    by_id: dict[str, Clip]) -> dict[str, Any]:
    """Write the quarantine CSV and the marker of a decoded modality; return the marker."""
    parts = []
    skipped = []
    for row in sorted(status, key=lambda row: int(row["part"])):
        if row["file"]:
            parts.append({"file": str(row["file"]), "bytes": int(row["bytes"]), "clip_ids": json.loads(row["clip_ids"])})
        skipped += [{"clip_id": clip_id, "modality": modality, "path": path, "reason": reason}
                    for clip_id, path, reason in json.loads(row["failures"])]
    skipped.sort(key=lambda item: item["clip_id"])

    if skipped:
        # No path is named here: the cache folder is published only when skipping is allowed,
        # and the error or the set's quarantine CSV lists the clips.
        logger.warning("%s: %d of %d clips failed to decode", modality, len(skipped), len(by_id))
        _write_quarantine(folder / QUARANTINE_FILE, skipped, by_id)
    marker = {
        "decoder_version": DECODER_VERSION,
        "key": key,
        "modality": modality,
        "build_id": uuid.uuid4().hex,
        "num_clips": sum(len(part["clip_ids"]) for part in parts),
        "num_failed": len(skipped),
        "skipped": [{name: item[name] for name in ("clip_id", "path", "reason")} for item in skipped],
        "parts": parts,
    }
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    return marker


def _write_quarantine(path: Path, skipped: list[dict[str, str]], by_id: dict[str, Clip]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_QUARANTINE_COLUMNS)
        for item in skipped:
            clip = by_id[item["clip_id"]]
            writer.writerow([item["clip_id"], item["modality"], clip.source, clip.row, item["path"], item["reason"]])


def _publish(staging_dir: Path, final_dir: Path) -> None:
    """Rename the finished staging folder to the cache folder in one step."""
    if final_dir.exists() and read_marker(final_dir) is None:
        # A folder without a marker never comes from the rename below, because the marker is
        # written before it. It is left-over or foreign content, so it is replaced.
        logger.warning("replacing incomplete decode cache folder %s", final_dir)
        shutil.rmtree(final_dir)
    try:
        os.rename(staging_dir, final_dir)
    except OSError:
        if read_marker(final_dir) is None:
            raise
        # Another process finished the same key first, and its cache has the same content.
        logger.info("decode cache %s was completed by another process; keeping it", final_dir)


def _cache_intact(folder: Path, marker: dict[str, Any]) -> bool:
    """Return whether every Parquet file the marker lists is there with its recorded size, and no other."""
    parts = marker.get("parts")
    if marker.get("decoder_version") != DECODER_VERSION or not isinstance(parts, list):
        return False
    recorded = {part["file"]: part["bytes"] for part in parts}
    present = {path.name: path.stat().st_size for path in folder.glob("*.parquet")}
    return present == recorded


def _check_skipped_allowed(skipped: list[dict[str, str]], cfg: DataConfig) -> None:
    if skipped and not cfg.skip_bad_clips:
        raise DatasetError(
            _failure_message(
                skipped,
                f"{len({item['clip_id'] for item in skipped})} clip(s) failed to decode",
                fix="fix or remove these files, or pass --data.skip_bad_clips true to skip them "
                "(they are then listed in a quarantine CSV in the cache folder)",
            )
        )


def _failure_message(skipped: list[dict[str, str]], summary: str, fix: str | None) -> str:
    lines = [f"{summary}:"]
    lines += [f"  {item['path']}: {item['reason']} ({item['modality']})" for item in skipped[:_MAX_LISTED_FAILURES]]
    if len(skipped) > _MAX_LISTED_FAILURES:
        lines.append(f"  ... and {len(skipped) - _MAX_LISTED_FAILURES} more")
    if fix:
        lines.append(f"To continue: {fix}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Sets of modalities


def _write_set(cache_dir: Path, keys: dict[str, str], markers: dict[str, dict[str, Any]],
               clips: list[Clip]) -> tuple[Path, dict[str, Any]]:
    """Write (or reuse) the folder describing the set of modality caches ``keys``; return it and its marker.

    The marker records each modality cache's build id, so a set whose modality was decoded
    again (after damage, or with other part sizes) gets a new read plan.
    """
    folder = set_dir(cache_dir, set_key(keys))
    build_ids = {modality: markers[modality]["build_id"] for modality in keys}
    existing = read_marker(folder)
    if existing is not None and existing.get("build_ids") == build_ids:
        return folder, existing

    by_id = {clip.clip_id: clip for clip in clips}
    plan, num_clips = _plan_parts(list(keys), markers, by_id)
    skipped = sorted(
        ({"clip_id": item["clip_id"], "modality": modality, "path": item["path"], "reason": item["reason"]}
         for modality in keys for item in markers[modality].get("skipped", [])),
        key=lambda item: (item["clip_id"], item["modality"]),
    )
    if num_clips == 0:
        raise DatasetError(_failure_message(
            skipped, f"every clip ({len(clips)}) failed to decode in at least one of {', '.join(keys)}", fix=None))

    marker = {
        "decoder_version": DECODER_VERSION,
        "modalities": list(keys),
        "keys": keys,
        "build_ids": build_ids,
        "num_clips": num_clips,
        "num_failed": len({item["clip_id"] for item in skipped}),
        "parts": plan,
    }
    folder.mkdir(parents=True, exist_ok=True)
    quarantine = folder / QUARANTINE_FILE
    if skipped:
        _replace_file(quarantine, lambda path: _write_quarantine(path, skipped, by_id))
    else:
        quarantine.unlink(missing_ok=True)
    # The marker is replaced last, so a set folder with a marker always has the quarantine CSV of that marker.
    _replace_file(folder / MARKER_FILE,
                  lambda path: path.write_text(json.dumps(marker, indent=1), encoding="utf-8"))
    return folder, marker


def _replace_file(path: Path, write: Any) -> None:
    """Write a file through a temporary sibling and rename it over ``path`` in one step."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _plan_parts(modalities: list[str], markers: dict[str, dict[str, Any]],
                by_id: dict[str, Clip]) -> tuple[list[dict[str, Any]], int]:
    """Return the read plan of a set and the number of clips present in every modality.

    There is one plan entry per part of the first modality that contains a clip present in all
    modalities. It lists the files of each modality that contain those clips and the (domain,
    split) pairs among them.
    """
    file_of = {
        modality: {clip_id: part["file"] for part in markers[modality]["parts"] for clip_id in part["clip_ids"]}
        for modality in modalities
    }
    common = set.intersection(*(set(files) for files in file_of.values()))
    plan = []
    for part in markers[modalities[0]]["parts"]:
        clip_ids = [clip_id for clip_id in part["clip_ids"] if clip_id in common]
        if not clip_ids:
            continue
        groups = sorted({(by_id[clip_id].domain, by_id[clip_id].split) for clip_id in clip_ids})
        plan.append({
            "files": {modality: sorted({file_of[modality][clip_id] for clip_id in clip_ids}) for modality in modalities},
            "groups": [list(group) for group in groups],
            "num_clips": len(clip_ids),
        })
    return plan, len(common)


__all__ = [
    "DECODER_VERSION",
    "DecodeCacheResult",
    "ModalityCache",
    "build_decode_cache",
    "decode_parts",
    "modality_cache_dir",
    "modality_key",
    "read_decoded",
    "set_key",
]
