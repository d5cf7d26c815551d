"""A generic clip manifest: any dataset as one CSV or Parquet table, with no reader code.

Each row is one clip. Required columns:

- ``clip_id`` (unique), ``domain``, ``split`` (``train`` or ``test``), ``label`` (integer >= 0);

optional columns, empty or null where they do not apply:

- ``video``, ``audio``, ``flow_x``, ``flow_y``: a media file, or an image-sequence pattern such as
  ``frames/%06d.jpg``; a relative path is resolved against the manifest's folder;
- ``start``, ``end``: the clip's span in seconds within its files (whole files when empty);
- ``audio_start``, ``audio_end``: the audio track's span, when it differs from ``start``/``end``;
- ``video_start_frame``, ``video_stop_frame``, ``flow_start_frame``, ``flow_stop_frame``: the
  span as first and last image index of an image sequence, both included.

Other columns (a narration, say) are ignored. ``write_manifest`` writes any clip table in this
format, for example to convert a dataset read by another reader once.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet

from merdg.data.clips import Clip, DatasetError

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("clip_id", "domain", "split", "label")
"""Columns every manifest must have."""

PATH_COLUMNS = ("video", "audio", "flow_x", "flow_y")
"""Columns holding media paths, resolved against the manifest's folder when relative."""

SPAN_COLUMNS = ("start", "end", "audio_start", "audio_end")
"""Columns holding spans in seconds."""

FRAME_COLUMNS = ("video_start_frame", "video_stop_frame", "flow_start_frame", "flow_stop_frame")
"""Columns holding image-sequence spans as image indices."""

SPLITS = ("train", "test")
"""Values the ``split`` column may take."""

_KNOWN_COLUMNS = (*REQUIRED_COLUMNS, *PATH_COLUMNS, *SPAN_COLUMNS, *FRAME_COLUMNS)


def read_manifest_table(path: str | os.PathLike) -> pa.Table:
    """Read a manifest file (``.csv`` or ``.parquet``) into an Arrow table, every column as read.

    Raises:
        DatasetError: the file is missing, has another extension or cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path}; set --data.manifest to a .csv or .parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            # Paths and ids stay strings even when they look like numbers.
            text_columns = {name: pa.string() for name in (*REQUIRED_COLUMNS[:3], *PATH_COLUMNS)}
            # Only an empty cell is null: pyarrow's default also reads "nan", "NULL" and "N/A" as null,
            # which would turn a mistyped span into a whole file without an error.
            options = pyarrow.csv.ConvertOptions(column_types=text_columns, strings_can_be_null=True, null_values=[""])
            return pyarrow.csv.read_csv(path, convert_options=options)
        if suffix == ".parquet":
            return pyarrow.parquet.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot read manifest {path}: {exc}") from None
    raise DatasetError(f"manifest {path}: unknown extension {suffix!r}; use a .csv or .parquet file")


def read_manifest(path: str | os.PathLike, *, domains: Sequence[str] | None = None) -> list[Clip]:
    """Return the clips of a manifest, keeping the rows of ``domains`` (all when None).

    Raises:
        DatasetError: a required column is missing, or a row has an empty id, domain or
            label, a split other than train and test, a negative or non-integer label, a
            duplicate clip id, or an invalid span. The message names the file and the row.
    """
    path = Path(path).resolve()
    table = read_manifest_table(path)
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise DatasetError(
            f"manifest {path}: missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}, "
            f"optional: {list(_KNOWN_COLUMNS[len(REQUIRED_COLUMNS):])}"
        )
    ignored = [name for name in table.column_names if name not in _KNOWN_COLUMNS]
    if ignored:
        logger.info("manifest %s: ignoring column(s) %s", path, ignored)

    # Rows are numbered from 1 in the order they are read, without the CSV header. The number is
    # not a line number, because a CSV can hold blank lines and quoted line breaks.
    first_row = 1
    columns = [name for name in table.column_names if name in _KNOWN_COLUMNS]
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    for offset, record in enumerate(table.select(columns).to_pylist()):
        row = first_row + offset
        clip = _make_clip(record, path, row)
        if clip.clip_id in seen:
            raise DatasetError(f"manifest {path}, row {row}: duplicate clip_id {clip.clip_id!r} (first at row "
                               f"{seen[clip.clip_id]}); each clip needs its own id")
        seen[clip.clip_id] = row
        if domains is None or clip.domain in domains:
            clips.append(clip)
    if not clips:
        logger.warning("manifest %s lists no clips for the domains %s", path, domains)
    return clips


def manifest_domains(clips: Sequence[Clip]) -> tuple[str, ...]:
    """Return the domains of a clip table in the order they first appear."""
    return tuple(dict.fromkeys(clip.domain for clip in clips))


def _text(record: dict[str, Any], name: str, path: Path, row: int) -> str:
    value = record.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        raise DatasetError(f"manifest {path}, row {row}: empty {name}; every row needs a {name}")
    return str(value).strip()


def _make_clip(record: dict[str, Any], path: Path, row: int) -> Clip:
    clip_id = _text(record, "clip_id", path, row)
    domain = _text(record, "domain", path, row)
    split = _text(record, "split", path, row)
    if split not in SPLITS:
        raise DatasetError(f"manifest {path}, row {row}: split {split!r} is not one of {list(SPLITS)}")
    label_text = _text(record, "label", path, row)
    try:
        label = int(float(label_text)) if float(label_text).is_integer() else None
    except ValueError:
        label = None
    if label is None or label < 0:
        raise DatasetError(f"manifest {path}, row {row}: label {label_text!r} is not an integer >= 0")

    values: dict[str, Any] = {}
    for name in PATH_COLUMNS:
        value = record.get(name)
        if value is not None and str(value).strip():
            # abspath keeps symbolic links as named, which resolve() would replace by their targets.
            values[name] = os.path.abspath(path.parent / str(value).strip())
    for name in (*SPAN_COLUMNS, *FRAME_COLUMNS):
        value = record.get(name)
        if value is not None and str(value).strip() != "":
            try:
                values[name] = float(value)
            except (TypeError, ValueError):
                raise DatasetError(f"manifest {path}, row {row}: {name} {value!r} is not a number") from None
            if not math.isfinite(values[name]):
                raise DatasetError(f"manifest {path}, row {row}: {name} {value!r} is not a finite number")
    for name in FRAME_COLUMNS:
        if name in values and not float(values[name]).is_integer():
            raise DatasetError(f"manifest {path}, row {row}: {name} {values[name]} is not an integer image index")
    try:
        return Clip(clip_id=clip_id, domain=domain, split=split, label=label, source=str(path), row=row, **values)
    except ValueError as exc:
        raise DatasetError(f"manifest {path}, row {row}: {exc}") from None


def write_manifest(clips: Sequence[Clip], path: str | os.PathLike) -> Path:
    """Write a clip table as a manifest (``.csv`` or ``.parquet`` by the file's extension).

    Paths are written as stored in the clips (absolute for the built-in readers).
    """
    path = Path(path)
    rows = [{name: getattr(clip, name) for name in _KNOWN_COLUMNS} for clip in clips]
    schema = pa.schema(
        [(name, pa.string()) for name in REQUIRED_COLUMNS[:3]]
        + [("label", pa.int64())]
        + [(name, pa.string()) for name in PATH_COLUMNS]
        + [(name, pa.float64()) for name in SPAN_COLUMNS]
        + [(name, pa.int64()) for name in FRAME_COLUMNS]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        pyarrow.csv.write_csv(table, path)
    elif path.suffix.lower() == ".parquet":
        pyarrow.parquet.write_table(table, path)
    else:
        raise ValueError(f"manifest {path}: unknown extension {path.suffix!r}; use .csv or .parquet")
    return path


__all__ = ["manifest_domains", "read_manifest", "read_manifest_table", "write_manifest"]
