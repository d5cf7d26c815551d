"""The clip table: one row per labelled clip, independent of the dataset's layout on disk.

Dataset readers produce ``Clip`` rows; the decoder and the Ray Data pipeline consume them. Code
downstream of the readers does not depend on file layouts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


class DatasetError(ValueError):
    """Invalid dataset input (a split file, a label, a missing folder); the message names the file."""


class ClipDecodeError(RuntimeError):
    """A clip that cannot be decoded: ``path`` is the file that failed and ``reason`` the cause."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Clip:
    """One labelled clip and the files its modalities are decoded from.

    Paths are absolute. ``flow_x`` and ``flow_y`` are each a video file or an image-sequence
    pattern such as ``.../u/frame_%010d.jpg``. ``audio`` is a wav file or any container with an
    audio stream. ``start`` and ``end`` (seconds) delimit the action; None means the whole file.
    ``source`` and ``row`` name the split file line the clip came from, for error messages.
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
    source: str = ""
    row: int = 0

    def to_row(self) -> dict[str, Any]:
        """Return the clip as a flat dict (a Ray Data row)."""
        return asdict(self)

    def paths(self, modality: str) -> list[str]:
        """Return the files a modality is decoded from (empty when the clip has none)."""
        if modality == "video":
            return [self.video] if self.video else []
        if modality == "audio":
            return [self.audio] if self.audio else []
        if modality == "flow":
            return [path for path in (self.flow_x, self.flow_y) if path]
        raise ValueError(f"unknown modality {modality!r}")
