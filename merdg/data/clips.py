"""The clip table: one row per labelled clip, independent of the dataset's layout on disk.

Dataset readers produce ``Clip`` rows; the decoder and the Ray Data pipeline consume them. Code
downstream of the readers does not depend on file layouts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """Invalid dataset input (a split file, a label, a missing folder); the message names the file."""


class CacheWriteError(DatasetError):
    """A cache folder that cannot be written (no permission, a read-only file system, a full disk).

    ``folder`` is the folder that failed and ``reason`` the operating system's message.
    """

    def __init__(self, folder: str, reason: str, flag: str = "--data.cache_dir"):
        super().__init__(
            f"cannot write to the cache folder {folder}: {reason}; free space there, make it writable, "
            f"or set {flag} to a writable folder with free space"
        )
        self.folder = folder
        self.reason = reason
        self.flag = flag

    def __reduce__(self):
        # Rebuilt from its fields, so that it survives pickling (between Ray processes, say).
        return type(self), (self.folder, self.reason, self.flag)


class ClipDecodeError(RuntimeError):
    """A clip that cannot be decoded: ``path`` is the file that failed and ``reason`` the cause."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Clip:
    """One labelled clip and the files its modalities are decoded from.

    Paths are absolute. ``video``, ``flow_x`` and ``flow_y`` are each a video file or an
    image-sequence pattern such as ``.../u/frame_%010d.jpg``. ``audio`` is a wav file or any
    container with an audio stream. ``start`` and ``end`` (seconds) delimit the action; None
    means the whole file. ``audio_start`` and ``audio_end``, when set, replace them for the audio
    track, for a dataset whose audio is one file per video beside clips cut into segment files.
    ``video_start_frame`` and ``video_stop_frame`` (and the ``flow_``
    pair) delimit it in an image sequence instead: the first and last image index on disk,
    both included, as EPIC-Kitchens numbers its frames. ``source`` and ``row`` name the split
    file line the clip came from, for error messages.

    Values from Ray Data or pandas rows are normalised on construction: NumPy scalars become
    Python numbers, NaN becomes None and frame indices become ints.

    Raises:
        ValueError: a span in seconds is negative, infinite or ends before it starts, or a frame
            span has only one end, a negative index, or ends before it starts.
    """

    clip_id: str
    domain: str
    split: str
    label: int
    video: str | None = None
    audio: str | None = None
    flow_x: str | None = None
    flow_y: str | None = None
    start: float | None = None
    end: float | None = None
    audio_start: float | None = None
    audio_end: float | None = None
    video_start_frame: int | None = None
    video_stop_frame: int | None = None
    flow_start_frame: int | None = None
    flow_stop_frame: int | None = None
    source: str = ""
    row: int = 0

    def __post_init__(self) -> None:
        for clip_field in dataclasses.fields(self):
            value = getattr(self, clip_field.name)
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and math.isnan(value):
                value = None
            if clip_field.name.endswith("_frame") and value is not None:
                value = int(value)
            object.__setattr__(self, clip_field.name, value)
        for first_name, last_name in (("start", "end"), ("audio_start", "audio_end")):
            first, last = getattr(self, first_name), getattr(self, last_name)
            for name, value in ((first_name, first), (last_name, last)):
                if value is not None and not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"clip {self.clip_id}: invalid {name} {value}; a span is in seconds >= 0")
            if first is not None and last is not None and last <= first:
                raise ValueError(
                    f"clip {self.clip_id}: invalid span: {last_name} {last} is not after {first_name} {first}"
                )
        for modality in ("video", "flow"):
            span = self.frame_span(modality)
            first = getattr(self, f"{modality}_start_frame")
            last = getattr(self, f"{modality}_stop_frame")
            if span is None and (first is not None or last is not None):
                raise ValueError(f"clip {self.clip_id}: {modality} frame span needs both ends, got [{first}, {last}]")
            if span is not None and not 0 <= span[0] <= span[1]:
                raise ValueError(f"clip {self.clip_id}: invalid {modality} frame span [{span[0]}, {span[1]}]")

    def to_row(self) -> dict[str, Any]:
        """Return the clip as a flat dict (a Ray Data row)."""
        return asdict(self)

    def frame_span(self, modality: str) -> tuple[int, int] | None:
        """Return the (first, last) image index of a modality's image sequence, or None."""
        first = getattr(self, f"{modality}_start_frame")
        last = getattr(self, f"{modality}_stop_frame")
        return (first, last) if first is not None and last is not None else None

    def audio_span(self) -> tuple[float | None, float | None]:
        """Return the (start, end) seconds of the audio track's span."""
        if self.audio_start is not None or self.audio_end is not None:
            return self.audio_start, self.audio_end
        return self.start, self.end

    def paths(self, modality: str) -> list[str]:
        """Return the files a modality is decoded from (empty when the clip has none)."""
        if modality == "video":
            return [self.video] if self.video else []
        if modality == "audio":
            return [self.audio] if self.audio else []
        if modality == "flow":
            return [path for path in (self.flow_x, self.flow_y) if path]
        raise ValueError(f"unknown modality {modality!r}")
