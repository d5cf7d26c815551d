"""Reader of EPIC-Kitchens with the MM-SADA domain splits (kitchens D1, D2, D3; 8 verb classes).

Split files are ``D{1,2,3}_{train,test}.pkl``: pickled pandas DataFrames with one row per action
segment and the columns ``uid``, ``video_id``, ``start_timestamp`` and ``stop_timestamp``
(``HH:MM:SS.ss``), ``start_frame`` and ``stop_frame`` (RGB frame indices, 1-based, both
included) and ``verb_class`` (0-7). Unpickling can run arbitrary code, so the files are read
through ``load_split_pickle``, which admits only the pandas and NumPy classes that such a
DataFrame needs.

Two layouts of the media are supported (``split`` is train or test, ``D`` the domain):

``frames``, the layout the MM-SADA loaders read::

    ROOT/rgb/<split>/<D>/<video_id>/frame_0000000001.jpg     (RGB frames, %010d, 1-based)
    ROOT/rgb/<split>/<D>/<video_id>.wav                      (16 kHz mono, beside the frame folder)
    ROOT/flow/<split>/<D>/<video_id>/{u,v}/frame_%010d.jpg   (flow at half the RGB frame rate)

``segments``, one file per action segment::

    ROOT/video/<split>/<D>/<D>_<video_id>_<start_frame>_<stop_frame>_<verb_class>.mp4
    ROOT/flow/<split>/<D>/<same stem>_u.mp4 and _v.mp4
    ROOT/audio/<split>/<D>/<video_id>.wav

In both layouts the audio is cut from the whole video's wav by the segment's timestamps. In the
frame layout, a flow image index is the RGB index divided by 2 (integer division, at least 1),
as the MM-SADA loaders compute it.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merdg.data.clips import Clip, DatasetError

logger = logging.getLogger(__name__)

EPIC_DOMAINS = ("D1", "D2", "D3")
"""Domain names of the MM-SADA splits, which are also the folder names under each split folder."""

EPIC_PARTICIPANTS = {"D1": "P08", "D2": "P01", "D3": "P22"}
"""The kitchen (participant) recorded in each domain."""

EPIC_CLASSES = ("take", "put", "open", "close", "wash", "cut", "mix", "pour")
"""Verb class names of the MM-SADA splits, indexed by ``verb_class``."""

EPIC_LAYOUTS = ("frames", "segments")
"""On-disk layouts of the media that ``read_epic`` understands."""

SPLIT_FILE_PATTERN = "{domain}_{split}.pkl"
"""File name of a split pickle, where ``{domain}`` is D1, D2 or D3 and ``{split}`` train or test."""

REQUIRED_COLUMNS = ("uid", "video_id", "start_timestamp", "stop_timestamp", "start_frame", "stop_frame", "verb_class")
"""Columns a split DataFrame must have."""

FRAME_PATTERN = "frame_%010d.jpg"
"""File name pattern of RGB and flow images in the frame layout."""

# Globals a pickled pandas DataFrame of these splits refers to, by (module, name): those of the
# published files and of object and int64 columns written by pandas 3.1. Columns of pandas 3's
# default string dtype pickle through pyarrow functions, which are rejected.
_ALLOWED_GLOBALS = frozenset(
    {
        ("pandas", "DataFrame"),
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.series", "Series"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas.core.internals.managers", "SingleBlockManager"),
        ("pandas.core.internals.blocks", "new_block"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "slice"),
        # Pickle protocols 0 to 2 rebuild objects and bytes through these.
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
        ("_codecs", "encode"),
    }
)
# NumPy 2 renamed numpy.core to numpy._core; pickles written with NumPy 1 use the old name.
# Pickle protocols 0 to 2 name the Python 2 modules copy_reg and __builtin__.
_RENAMED_MODULES = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
    "copy_reg": "copyreg",
    "__builtin__": "builtins",
}

_TIMESTAMP = re.compile(r"\A(\d+):(\d{2}):(\d{2}(?:\.\d+)?)\Z")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        module = _RENAMED_MODULES.get(module, module)
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DatasetError(
                f"{self._path}: rejected unpickling global {module}.{name}; a split pickle may only contain a "
                "pandas DataFrame of object and number columns, and this file asks for another object (it may "
                "run code when loaded). Use the published split files. For a file you trust, re-save it with "
                "object columns (df.astype(object).to_pickle(path)), or convert it to a manifest CSV read with "
                "--data.dataset manifest"
            )
        return super().find_class(module, name)


def load_split_pickle(path: str | os.PathLike) -> Any:
    """Load a pickled pandas DataFrame, admitting only the classes a plain DataFrame needs.

    Raises:
        DatasetError: the file is missing or unreadable, it refers to any other global (a
            pickle that would import a module or call a function), or it contains no DataFrame.
    """
    import pandas as pd

    path = Path(path)
    try:
        with path.open("rb") as handle:
            frame = _RestrictedUnpickler(handle, path).load()
    except FileNotFoundError:
        raise DatasetError(f"split file not found: {path}; check --data.splits_dir (or --data.root)") from None
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many exception types
        raise DatasetError(f"cannot read split file {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(frame, pd.DataFrame):
        raise DatasetError(
            f"{path}: invalid split file: it contains a {type(frame).__name__}, expected a pandas DataFrame"
        )
    return frame


def parse_timestamp(text: str) -> float:
    """Convert an EPIC-Kitchens timestamp ``HH:MM:SS.ss`` to seconds.

    Raises:
        ValueError: the text is not in that format.
    """
    match = _TIMESTAMP.match(str(text).strip())
    if match is None:
        raise ValueError(f"timestamp {text!r} is not in the format HH:MM:SS.ss")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def flow_index(rgb_index: int) -> int:
    """Return the flow image index of an RGB frame index in the frame layout (RGB index / 2, at least 1)."""
    return max(1, rgb_index // 2)


def read_epic(
    root: str | os.PathLike,
    *,
    domains: Sequence[str] | None = None,
    splits_dir: str | os.PathLike | None = None,
    layout: str = "frames",
    splits: Sequence[str] = ("train", "test"),
) -> list[Clip]:
    """Return one clip per row of the split pickles of ``domains`` under an EPIC-Kitchens root.

    ``splits_dir`` contains the split pickles (default: ``root``). Clip ids are
    ``<domain>/<split>/<uid>``. Media paths are absolute and are not checked here: a missing
    file is reported when the clip is decoded.

    Raises:
        DatasetError: a split pickle is missing, unsafe or invalid (a column missing, a label
            outside 0-7, a bad timestamp or frame span, a duplicate uid), the split pickles of a
            domain list no segment at all, or ``layout`` is unknown.
    """
    if layout not in EPIC_LAYOUTS:
        raise DatasetError(f"invalid --data.epic_layout {layout!r}; choose from {list(EPIC_LAYOUTS)}")
    root = Path(root).resolve()
    split_folder = Path(splits_dir).resolve() if splits_dir is not None else root
    domains = tuple(domains) if domains is not None else EPIC_DOMAINS

    clips: list[Clip] = []
    for domain in domains:
        num_before = len(clips)
        for split in splits:
            path = split_folder / SPLIT_FILE_PATTERN.format(domain=domain, split=split)
            frame = load_split_pickle(path)
            try:
                _check_columns(frame, path)
                records = frame.to_dict("records")
            except (AttributeError, TypeError, ValueError, KeyError) as exc:
                # A pickle can set any attribute of the DataFrame it rebuilds, which breaks it.
                raise DatasetError(f"{path}: invalid split file: the DataFrame in it is damaged ({exc})") from None
            if not records:
                logger.warning("split file %s lists no segments", path)
            first_rows: dict[str, int] = {}
            for position, row in enumerate(records, start=1):
                clip = _make_clip(root, domain, split, row, path, position, layout)
                if clip.clip_id in first_rows:
                    raise _row_error(path, position, f"duplicate uid {row['uid']} (first at row "
                                     f"{first_rows[clip.clip_id]}); each segment needs its own uid")
                first_rows[clip.clip_id] = position
                clips.append(clip)
        if len(clips) == num_before:
            split_files = [str(split_folder / SPLIT_FILE_PATTERN.format(domain=domain, split=split)) for split in splits]
            raise DatasetError(
                f"domain {domain!r} has no clips: its split files {', '.join(split_files)} list no segments; "
                "fill them, or leave the domain out with --data.domains"
            )
    return clips


def _check_columns(frame: Any, path: Path) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {missing}; an MM-SADA split DataFrame has {list(REQUIRED_COLUMNS)}"
        )


def _row_error(path: Path, position: int, message: str) -> DatasetError:
    return DatasetError(f"{path}, row {position}: {message}")


def _integer(value: Any, name: str, path: Path, position: int) -> int:
    if isinstance(value, float) and (math.isnan(value) or not value.is_integer()):
        raise _row_error(path, position, f"{name} {value!r} is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _row_error(path, position, f"{name} {value!r} is not an integer") from None


def _make_clip(
    root: Path, domain: str, split: str, row: dict[str, Any], path: Path, position: int, layout: str
) -> Clip:
    label = _integer(row["verb_class"], "verb_class", path, position)
    if not 0 <= label < len(EPIC_CLASSES):
        raise _row_error(
            path, position, f"verb_class {label} is outside [0, {len(EPIC_CLASSES)}); fix the label in that row"
        )
    first = _integer(row["start_frame"], "start_frame", path, position)
    last = _integer(row["stop_frame"], "stop_frame", path, position)
    if not 1 <= first <= last:
        raise _row_error(path, position, f"invalid frame span start_frame={first}, stop_frame={last}; "
                         "frames are 1-based and stop_frame must not precede start_frame")
    try:
        start = parse_timestamp(row["start_timestamp"])
        end = parse_timestamp(row["stop_timestamp"])
    except ValueError as exc:
        raise _row_error(path, position, str(exc)) from None
    if end <= start:
        raise _row_error(path, position, f"stop_timestamp {row['stop_timestamp']} is not after "
                         f"start_timestamp {row['start_timestamp']}")

    uid = _integer(row["uid"], "uid", path, position)
    video_id = str(row["video_id"])
    common = dict(
        clip_id=f"{domain}/{split}/{uid}",
        domain=domain,
        split=split,
        label=label,
        audio_start=start,
        audio_end=end,
        source=str(path),
        row=position,
    )
    if layout == "frames":
        rgb = root / "rgb" / split / domain
        flow = root / "flow" / split / domain / video_id
        return Clip(
            **common,
            video=str(rgb / video_id / FRAME_PATTERN),
            audio=str(rgb / f"{video_id}.wav"),
            flow_x=str(flow / "u" / FRAME_PATTERN),
            flow_y=str(flow / "v" / FRAME_PATTERN),
            video_start_frame=first,
            video_stop_frame=last,
            flow_start_frame=flow_index(first),
            flow_stop_frame=flow_index(last),
        )
    # Segment files hold only the action, so they are read whole; only the wav is cut.
    stem = f"{domain}_{video_id}_{first}_{last}_{label}"
    flow = root / "flow" / split / domain
    return Clip(
        **common,
        video=str(root / "video" / split / domain / f"{stem}.mp4"),
        audio=str(root / "audio" / split / domain / f"{video_id}.wav"),
        flow_x=str(flow / f"{stem}_u.mp4"),
        flow_y=str(flow / f"{stem}_v.mp4"),
    )
