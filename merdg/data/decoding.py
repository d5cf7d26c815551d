"""Decode one clip's video, audio and optical flow into fixed-shape arrays with PyAV.

Every function here raises ``ClipDecodeError(path, reason)`` when a file cannot give a complete
clip: it never returns a partial or zero-filled array in place of real data.

Frames are sampled as mmaction2 1.x ``SampleFrames(test_mode=True, num_clips=1)`` samples them:
for a span of ``N`` frames and a window of ``L = (num_frames - 1) * frame_stride + 1`` frames,
the window starts at ``max(N - L, 0) // 2`` and indices past the span wrap around modulo ``N``.

Audio follows the recipe of the official MER-DG code: cut the span from the mono track at
``sample_rate``, keep the first ``num_samples`` samples and tile a shorter cut, clip to [-1, 1],
then ``scipy.signal.spectrogram``, ``log(S + 1e-7)`` and a per-clip z-score.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter
import scipy.signal

from merdg.config import AudioDecodeConfig, DataConfig, FlowDecodeConfig, VideoDecodeConfig
from merdg.data.clips import Clip, ClipDecodeError

logger = logging.getLogger(__name__)

LOG_EPSILON = 1e-7
"""Added to the power spectrogram before the log."""
ZSCORE_EPSILON = 1e-9
"""Added to the standard deviation of the log spectrogram before dividing."""
IMAGE2_DEFAULT_RATE = 25.0
"""Frame rate (Hz) of an image sequence when none is given, the image2 demuxer's default."""

# A stream whose decoded frames stop more than this many seconds (or 3 frame periods, whichever
# is larger) before the duration its container declares is reported as truncated.
_TRUNCATION_TOLERANCE_S = 0.5

# Audio spans are decoded from this long before ``start``: the first frames after a seek (and
# the resampler's start-up) can be inexact, and this keeps them out of the span.
_AUDIO_SEEK_MARGIN_S = 0.5

_SEQUENCE_FIELD = re.compile(r"%(0?)(\d*)d")
_PYAV_ERRORS = (av.error.FFmpegError, OSError)


# ----------------------------------------------------------------------------------------------
# Frame index sampling


def sample_frame_indices(num_available: int, num_frames: int, stride: int) -> list[int]:
    """Return the indices of ``num_frames`` frames at ``stride`` around the centre of a span.

    ``num_available`` is the number of frames in the span. Indices wrap around (modulo
    ``num_available``) when the window is longer than the span.
    """
    if num_available < 1:
        raise ValueError(f"num_available={num_available} < 1")
    window = (num_frames - 1) * stride + 1
    first = max(num_available - window, 0) // 2
    return [(first + k * stride) % num_available for k in range(num_frames)]


def _candidate_indices(estimate: int | None, num_frames: int, stride: int) -> set[int]:
    # The decoded frame count can differ from the header's count by a frame or two (opencv's
    # box.mp4 declares 456 frames and decodes 455), so frames for nearby counts are kept too.
    if not estimate:
        return set()
    candidates: set[int] = set()
    for count in range(max(1, estimate - 3), estimate + 4):
        candidates.update(sample_frame_indices(count, num_frames, stride))
    return candidates


# ----------------------------------------------------------------------------------------------
# Opening media


def sequence_file(pattern: str, index: int) -> str:
    """Return the file of image ``index`` of a sequence pattern, such as ``.../frame_%010d.jpg``.

    Only the ``%d`` field of the file name is replaced, so a ``%`` elsewhere in the path (a
    folder named ``a%20b``) is kept as it is.
    """
    folder, name = os.path.split(pattern)
    match = _SEQUENCE_FIELD.search(name)
    if match is None:
        raise ValueError(f"{pattern}: the file name has no %d field")
    field = "%" + match.group(1) + match.group(2) + "d"
    return os.path.join(folder, name[: match.start()] + field % index + name[match.end() :])


def _is_sequence_pattern(path: str) -> bool:
    return _SEQUENCE_FIELD.search(os.path.basename(path)) is not None and not os.path.isfile(path)


@dataclass(frozen=True)
class _SequenceInfo:
    first_index: int
    num_files: int


def _scan_sequence(pattern: str) -> _SequenceInfo:
    """Find the first index and the number of files of an image-sequence pattern on disk."""
    folder, name = os.path.split(pattern)
    match = _SEQUENCE_FIELD.search(name)
    assert match is not None
    prefix, suffix = name[: match.start()], name[match.end() :]
    width = int(match.group(2)) if match.group(2) else 0
    digits = rf"(\d{{{width}}})" if match.group(1) and width else r"(\d+)"
    file_regex = re.compile(re.escape(prefix) + digits + re.escape(suffix) + r"\Z")

    try:
        entries = os.listdir(folder or ".")
    except FileNotFoundError:
        raise ClipDecodeError(pattern, f"file not found: folder {folder} does not exist") from None
    except OSError as exc:
        raise ClipDecodeError(pattern, f"cannot list the image-sequence folder: {exc}") from None

    indices = sorted(int(m.group(1)) for m in map(file_regex.match, entries) if m)
    if not indices:
        raise ClipDecodeError(pattern, "file not found: no image on disk matches the sequence pattern")

    first, last = indices[0], indices[-1]
    if last - first + 1 != len(indices):
        present = set(indices)
        missing = next(i for i in range(first, last + 1) if i not in present)
        raise ClipDecodeError(
            pattern,
            f"image sequence has a gap: frame {sequence_file(pattern, missing)} is missing "
            f"({len(indices)} frames found between indices {first} and {last})",
        )
    return _SequenceInfo(first_index=first, num_files=len(indices))


def _open_file(path: str) -> av.container.InputContainer:
    """Open a media file, raising ClipDecodeError when it is missing, empty or unreadable."""
    if not os.path.isfile(path):
        raise ClipDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise ClipDecodeError(path, "undecodable file: the file is empty (0 bytes)")
    try:
        return av.open(path)
    except _PYAV_ERRORS as exc:
        raise ClipDecodeError(path, f"undecodable file: {exc}") from None


def _container_start(container: av.container.InputContainer) -> float:
    """Return the container's first timestamp in seconds; clip spans are relative to it."""
    return container.start_time / av.time_base if container.start_time is not None else 0.0


def _declared_end(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """Return the stream's end in seconds from the container start, as its header declares it."""
    candidates = []
    if stream.duration is not None and stream.time_base is not None:
        stream_start = stream.start_time if stream.start_time is not None else 0
        candidates.append(float((stream_start + stream.duration) * stream.time_base) - _container_start(container))
    if container.format.name == "avi" and stream.type == "video" and stream.frames and stream.average_rate:
        # The AVI demuxer shortens the durations of a truncated file to the data present, but
        # the header's frame count stays. (In mp4 the frame count can include frames that an
        # edit list drops, so it is not used there.)
        candidates.append(stream.frames / float(stream.average_rate))
    if not candidates and container.duration is not None:
        candidates.append(container.duration / av.time_base)
    return max(candidates) if candidates else None


def _check_span(path: str, start: float | None, end: float | None) -> None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and not math.isfinite(value):
            raise ClipDecodeError(path, f"invalid span: {name}={value} s is not a finite number")
    if start is not None and start < 0:
        raise ClipDecodeError(path, f"invalid span: start={start} s is negative")
    if start is not None and end is not None and end <= start:
        raise ClipDecodeError(path, f"invalid span: end={end} s is not after start={start} s")


def _seek(container: av.container.InputContainer, stream: av.stream.Stream, seconds: float) -> None:
    """Seek to the last keyframe at or before ``seconds`` (container time)."""
    if seconds <= 0:
        return
    target = int((seconds + _container_start(container)) / stream.time_base)
    container.seek(target, stream=stream, backward=True, any_frame=False)


# ----------------------------------------------------------------------------------------------
# Video and flow frames


def _frame_time(frame: av.VideoFrame | av.AudioFrame, container_start: float) -> float | None:
    return None if frame.time is None else frame.time - container_start


def _iter_span_frames(
    path: str,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    start: float | None,
    end: float | None,
) -> Iterator[tuple[av.VideoFrame, float | None]]:
    """Yield the decoded frames whose timestamps fall in [start, end), with their times."""
    container_start = _container_start(container)
    if start is not None:
        _seek(container, stream, start)
    for frame in container.decode(stream):
        time = _frame_time(frame, container_start)
        if time is None and (start is not None or end is not None):
            raise ClipDecodeError(path, "frames carry no timestamps, so the clip's time span cannot be cut")
        if start is not None and time < start:
            continue
        if end is not None and time >= end:
            break
        yield frame, time


def _resize_and_crop(
    frame: av.VideoFrame, size: int, pixel_format: str, reformatter: VideoReformatter
) -> np.ndarray:
    """Resize the short side to ``size`` with swscale, then crop the centre ``size`` square.

    Returns a view into the resized image. The ``reformatter`` is shared by the frames of a clip,
    so that one swscale context serves all of them instead of one per frame.
    """
    width, height = frame.width, frame.height
    if width <= height:
        new_width, new_height = size, max(size, round(height * size / width))
    else:
        new_width, new_height = max(size, round(width * size / height)), size
    # One scaling thread: decoding already runs one task per CPU, and swscale's default of one
    # thread per CPU costs more to start than it saves on frames of this size.
    image = reformatter.reformat(
        frame, width=new_width, height=new_height, format=pixel_format, interpolation="BILINEAR", threads=1
    )
    array = image.to_ndarray()
    top = (new_height - size) // 2
    left = (new_width - size) // 2
    return array[top : top + size, left : left + size]


@dataclass
class _SampledFrames:
    frames: list[np.ndarray]
    num_available: int


def _decode_pass(
    path: str,
    start: float | None,
    end: float | None,
    keep: set[int],
) -> tuple[dict[int, av.VideoFrame], int]:
    """Decode a span of a video file once, keeping the frames whose span index is in ``keep``.

    Returns the frames kept, by span index, and the number of frames in the span.
    """
    container = _open_file(path)
    try:
        if not container.streams.video:
            raise ClipDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1

        frames_by_index: dict[int, av.VideoFrame] = {}
        count = 0
        last_time = None
        for frame, time in _iter_span_frames(path, container, stream, start, end):
            if count in keep:
                frames_by_index[count] = frame
            count += 1
            last_time = time

        if count:
            _check_not_truncated(path, container, stream, start, end, last_time)
        return frames_by_index, count
    except _PYAV_ERRORS as exc:
        raise ClipDecodeError(path, f"undecodable or truncated file: {exc}") from None
    finally:
        container.close()


def _check_not_truncated(
    path: str,
    container: av.container.InputContainer,
    stream: av.stream.Stream,
    start: float | None,
    end: float | None,
    last_time: float | None,
) -> None:
    """Raise when decoding stopped well before the span's end that the header declares.

    NOTE: a cut that loses less than the tolerance (0.5 s, or 3 frame periods) at the end of a
    stream is not detected.
    """
    declared = _declared_end(container, stream)
    if declared is None or last_time is None:
        return
    expected = declared if end is None else min(end, declared)
    if start is not None and expected <= start:
        return
    frame_period = 1.0 / float(stream.average_rate) if getattr(stream, "average_rate", None) else 0.0
    tolerance = max(_TRUNCATION_TOLERANCE_S, 3 * frame_period)
    if last_time < expected - tolerance:
        raise ClipDecodeError(
            path,
            f"truncated file: decoding stopped at {last_time:.2f} s but the {stream.type} stream "
            f"declares data up to {expected:.2f} s",
        )


def _estimate_span_frames(path: str, start: float | None, end: float | None) -> int | None:
    """Estimate the number of frames in the span from the file header, without decoding."""
    container = _open_file(path)
    try:
        if not container.streams.video:
            raise ClipDecodeError(path, "no video stream")
        stream = container.streams.video[0]
        if not stream.average_rate:
            if start is None and end is None:
                return stream.frames or None
            return None
        rate = float(stream.average_rate)
        total = stream.frames or None
        if total is None:
            declared = _declared_end(container, stream)
            total = round(declared * rate) if declared else None
        if start is None and end is None:
            return total
        span_end = end
        if total is not None:
            span_end = total / rate if span_end is None else min(span_end, total / rate)
        if span_end is None:
            return None
        return max(0, round((span_end - (start or 0.0)) * rate))
    finally:
        container.close()


def _decode_sampled_frames(
    path: str,
    num_frames: int,
    stride: int,
    start: float | None,
    end: float | None,
    convert: Callable[[av.VideoFrame], np.ndarray],
    sequence_rate: float | None = None,
    frames: tuple[int, int] | None = None,
) -> _SampledFrames:
    """Decode a span and return the centre-sampled frames (converted) and the span length.

    ``frames`` (first and last image index, both included) selects the span of an image
    sequence directly and takes precedence over ``start`` and ``end`` there.
    """
    _check_span(path, start, end)
    if _is_sequence_pattern(path):
        if frames is not None:
            return _decode_indexed_images(path, num_frames, stride, frames, convert)
        return _decode_sequence_frames(path, num_frames, stride, start, end, convert, sequence_rate)
    if frames is not None:
        raise ClipDecodeError(
            path, f"a frame span {list(frames)} is given for a video file; frame spans select images of an "
            "image sequence (a path with a %d field), so give a video file's span as start and end in seconds"
        )
    return _decode_file_frames(path, num_frames, stride, start, end, convert)


def _decode_file_frames(
    path: str,
    num_frames: int,
    stride: int,
    start: float | None,
    end: float | None,
    convert: Callable[[av.VideoFrame], np.ndarray],
) -> _SampledFrames:
    """Sample the frames of a video file's span.

    One decoding pass keeps the decoded frames that the sampling would pick for frame counts
    near the header's estimate, and only the frames picked for the decoded count are converted.
    A second pass runs only when the decoded count falls outside that range.

    NOTE: the frames kept stay in memory at decoded size until they are converted, about twice
    the sampled count (for 32 frames of 1080p video, about 200 MB).
    """
    estimate = _estimate_span_frames(path, start, end)
    frames_by_index, count = _decode_pass(path, start, end, _candidate_indices(estimate, num_frames, stride))
    if count == 0:
        where = "in the file" if start is None and end is None else f"in the span [{start}, {end}) s"
        raise ClipDecodeError(path, f"zero decodable frames {where}")

    indices = sample_frame_indices(count, num_frames, stride)
    if not set(indices) <= frames_by_index.keys():
        logger.debug("%s: %d frames decoded, header estimate %s; decoding a second time", path, count, estimate)
        frames_by_index, recount = _decode_pass(path, start, end, set(indices))
        if recount != count:
            raise ClipDecodeError(path, f"undecodable file: {count} frames on the first pass, {recount} on the second")
    converted = {index: convert(frames_by_index[index]) for index in set(indices)}
    return _SampledFrames(frames=[converted[i] for i in indices], num_available=count)


def _decode_sequence_frames(
    pattern: str,
    num_frames: int,
    stride: int,
    start: float | None,
    end: float | None,
    convert: Callable[[av.VideoFrame], np.ndarray],
    sequence_rate: float | None,
) -> _SampledFrames:
    """Sample the images of an image sequence's span, reading only the images up to the last one needed.

    Image ``k`` (counted from the first image on disk) lies at ``k / rate`` seconds, so the span
    [start, end) is the images ``ceil(start * rate)`` to ``ceil(end * rate) - 1``.
    """
    info = _scan_sequence(pattern)
    rate = sequence_rate or IMAGE2_DEFAULT_RATE
    first = 0 if start is None else math.ceil(start * rate - 1e-6)
    stop = info.num_files if end is None else min(info.num_files, math.ceil(end * rate - 1e-6))
    count = stop - first
    if count <= 0:
        raise ClipDecodeError(
            pattern, f"zero decodable frames in the span [{start}, {end}) s ({info.num_files} images at {rate} Hz)"
        )

    indices = sample_frame_indices(count, num_frames, stride)
    wanted = set(indices)
    needed = max(indices) + 1
    options = {"start_number": str(info.first_index + first), "pattern_type": "sequence"}
    converted: dict[int, np.ndarray] = {}
    try:
        # The image2 demuxer reads every % in the path as a field, so one outside the file
        # name's %d field is escaped as %%.
        folder, name = os.path.split(pattern)
        demuxer_pattern = os.path.join(folder.replace("%", "%%"), name)
        with av.open(demuxer_pattern, format="image2", options=options) as container:
            for position, frame in enumerate(container.decode(video=0)):
                if position >= needed:
                    break
                if position in wanted:
                    converted[position] = convert(frame)
    except _PYAV_ERRORS as exc:
        raise ClipDecodeError(pattern, f"undecodable image sequence: {exc}") from None
    if len(converted) < len(wanted):
        raise ClipDecodeError(
            pattern, f"undecodable image sequence: {len(converted)} of the {len(wanted)} sampled images decoded"
        )
    return _SampledFrames(frames=[converted[i] for i in indices], num_available=count)


_IMAGE_CODECS = {".jpg": "mjpeg", ".jpeg": "mjpeg", ".png": "png", ".bmp": "bmp"}
MAX_IMAGE_BYTES = 256 * 1024 * 1024
"""Largest image file read, in bytes; a frame of a video dataset is far smaller."""


def _decode_indexed_images(
    pattern: str,
    num_frames: int,
    stride: int,
    frames: tuple[int, int],
    convert: Callable[[av.VideoFrame], np.ndarray],
) -> _SampledFrames:
    """Sample the images ``frames[0]`` to ``frames[1]`` (both included) of an image sequence.

    Only the sampled images are read. Each is decoded on its own with the image codec that its
    extension names, without a demuxer, which is what makes frame-layout datasets fast to read.
    """
    first, last = frames
    count = last - first + 1
    indices = sample_frame_indices(count, num_frames, stride)
    codec_name = _IMAGE_CODECS.get(os.path.splitext(pattern)[1].lower())
    codec = av.CodecContext.create(codec_name, "r") if codec_name else None

    converted: dict[int, np.ndarray] = {}
    for index in sorted(set(indices)):
        image_path = sequence_file(pattern, first + index)
        converted[index] = _decode_image(image_path, codec, convert, pattern, frames)
    return _SampledFrames(frames=[converted[i] for i in indices], num_available=count)


def _decode_image(
    path: str,
    codec: av.CodecContext | None,
    convert: Callable[[av.VideoFrame], np.ndarray],
    pattern: str,
    frames: tuple[int, int],
) -> np.ndarray:
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):
            raise ClipDecodeError(path, "undecodable image: not a regular file (a folder, pipe or device)")
        if status.st_size > MAX_IMAGE_BYTES:
            raise ClipDecodeError(path, f"undecodable image: {status.st_size} bytes, more than {MAX_IMAGE_BYTES}")
        with open(path, "rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except FileNotFoundError:
        raise ClipDecodeError(
            path, f"missing frame: the span [{frames[0]}, {frames[1]}] of {pattern} needs this image"
        ) from None
    except OSError as exc:
        raise ClipDecodeError(path, f"cannot read the image: {exc}") from None
    if not data:
        raise ClipDecodeError(path, "undecodable image: the file is empty (0 bytes)")
    if codec is not None and codec.name == "mjpeg" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        # FFmpeg's JPEG decoder returns a cut file's missing rows as grey without an error.
        raise ClipDecodeError(
            path, "undecodable image: no JPEG end-of-image marker, so the file is truncated or not a JPEG"
        )
    try:
        if codec is not None:
            # Image codecs return the frame of a packet at once, so the codec is never flushed
            # (a flushed codec accepts no more packets) and serves every image of the clip.
            decoded = codec.decode(av.Packet(data))
            if decoded:
                return convert(decoded[0])
        with av.open(path) as container:
            return convert(next(container.decode(video=0)))
    except (*_PYAV_ERRORS, StopIteration) as exc:
        raise ClipDecodeError(path, f"undecodable image: {exc or 'no frame'}") from None


def decode_video(
    path: str | os.PathLike,
    cfg: VideoDecodeConfig,
    start: float | None = None,
    end: float | None = None,
    *,
    frames: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode ``cfg.num_frames`` RGB frames sampled around the centre of a clip's span.

    ``start`` and ``end`` are seconds from the start of the file. The span is [start, end),
    the whole file when both are None. For an image-sequence pattern, ``frames`` gives the
    span as the first and last image index instead (both included). Frames are resized so the
    short side is ``cfg.frame_size`` and centre-cropped.

    Returns:
        uint8 array of shape (num_frames, frame_size, frame_size, 3).
    """
    size = cfg.frame_size
    reformatter = VideoReformatter()
    sampled = _decode_sampled_frames(
        os.fspath(path),
        cfg.num_frames,
        cfg.frame_stride,
        start,
        end,
        lambda frame: _resize_and_crop(frame, size, "rgb24", reformatter),
        frames=frames,
    )
    return np.stack(sampled.frames).astype(np.uint8, copy=False)


def decode_flow(
    x_path: str | os.PathLike,
    y_path: str | os.PathLike,
    cfg: FlowDecodeConfig,
    start: float | None = None,
    end: float | None = None,
    *,
    sequence_rate: float | None = None,
    frames: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode stored optical flow (x and y components) into a 2-channel clip.

    Each path is a grayscale video (128 is zero flow) or an image-sequence pattern such as
    ``.../x_%05d.jpg``, whose first index is found on disk. The two components are sampled like
    video frames and must have the same number of frames in the span. ``sequence_rate`` is the
    frame rate (Hz) that converts ``start`` and ``end`` to image indices, and None means 25 Hz
    (the image2 demuxer's default). For image sequences, ``frames`` gives the span as the first
    and last flow image index instead (both included).

    Returns:
        uint8 array of shape (num_frames, frame_size, frame_size, 2), x then y on the last axis.
    """
    x_path, y_path = os.fspath(x_path), os.fspath(y_path)
    size = cfg.frame_size

    reformatter = VideoReformatter()

    def to_gray(frame: av.VideoFrame) -> np.ndarray:
        return _resize_and_crop(frame, size, "gray", reformatter)

    x = _decode_sampled_frames(x_path, cfg.num_frames, cfg.frame_stride, start, end, to_gray, sequence_rate, frames)
    y = _decode_sampled_frames(y_path, cfg.num_frames, cfg.frame_stride, start, end, to_gray, sequence_rate, frames)
    if x.num_available != y.num_available:
        raise ClipDecodeError(
            y_path,
            f"flow frame counts differ: x has {x.num_available} frames ({x_path}), "
            f"y has {y.num_available} in the same span",
        )
    return np.stack([np.stack(x.frames), np.stack(y.frames)], axis=-1).astype(np.uint8, copy=False)


# ----------------------------------------------------------------------------------------------
# Audio


def load_audio_samples(
    path: str | os.PathLike,
    sample_rate: int,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Decode the first audio stream's span as mono float32 samples at ``sample_rate``.

    Resampling and the down-mix use PyAV's ``AudioResampler`` (libswresample), which mixes
    stereo as (left + right) / sqrt(2), so samples can exceed 1. The span is cut by sample
    index, ``int(start * sample_rate)`` to ``int(end * sample_rate)``, counted from the start of
    the file, as the official loader cuts its 16 kHz wav. A span is decoded from a seek point
    ``_AUDIO_SEEK_MARGIN_S`` before ``start``, with the input trimmed so that the output samples
    fall on the same grid as a decode of the whole file.

    NOTE: positions after a seek come from the frame timestamps. In a file whose audio
    timestamps jitter (opencv's box.mp4 is one), a span cut after a seek is off by that jitter,
    so it differs from the same span cut from a whole-file decode.
    """
    path = os.fspath(path)
    _check_span(path, start, end)
    container = _open_file(path)
    try:
        if not container.streams.audio:
            raise ClipDecodeError(path, "no audio stream")
        if container.format.name == "wav":
            _check_wav_complete(path)
        stream = container.streams.audio[0]
        if start is not None:
            _seek(container, stream, start - _AUDIO_SEEK_MARGIN_S)
        samples, offset = _resample_stream(path, container, stream, sample_rate, start, end)
    except _PYAV_ERRORS as exc:
        raise ClipDecodeError(path, f"undecodable or truncated file: {exc}") from None
    finally:
        container.close()

    first = max(0, int(start * sample_rate) - offset) if start is not None else 0
    last = int(end * sample_rate) - offset if end is not None else len(samples)
    samples = samples[first : max(first, last)]
    if samples.size == 0:
        raise ClipDecodeError(path, f"zero decodable audio samples in the span [{start}, {end}) s")
    return samples


def _check_wav_complete(path: str) -> None:
    """Raise when a RIFF WAVE file contains fewer sample bytes than its ``data`` chunk declares.

    FFmpeg's wav demuxer shortens the duration of a cut file to the bytes present, so the
    duration check of ``_check_not_truncated`` cannot see the cut, but the chunk header can.
    A data size of 0 or 0xFFFFFFFF, which streaming writers leave when the size is unknown, is
    not checked.
    """
    file_size = os.path.getsize(path)
    byte_rate = 0
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        offset = 12
        while True:
            handle.seek(offset)
            # The chunk header (id, size), then for "fmt " the format, channels, rate and byte rate.
            chunk = handle.read(20)
            if len(chunk) < 8:
                return
            chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if chunk_id == b"fmt " and len(chunk) >= 20:
                byte_rate = int.from_bytes(chunk[16:20], "little")
            if chunk_id == b"data":
                break
            offset += 8 + chunk_size + (chunk_size & 1)
    present = file_size - (offset + 8)
    if chunk_size in (0, 0xFFFFFFFF) or present >= chunk_size:
        return
    declared_seconds = f" ({chunk_size / byte_rate:.2f} s)" if byte_rate else ""
    present_seconds = f" ({present / byte_rate:.2f} s)" if byte_rate else ""
    raise ClipDecodeError(
        path, f"truncated file: the wav data chunk declares {chunk_size} bytes{declared_seconds} but the file "
        f"contains {present}{present_seconds}"
    )


def _resample_stream(
    path: str,
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    sample_rate: int,
    start: float | None,
    end: float | None,
) -> tuple[np.ndarray, int]:
    """Decode and resample from the current position until past ``end``.

    Returns the mono samples and the index of the first one on the output grid of the file.
    """
    container_start = _container_start(container)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    offset: int | None = None
    last_time: float | None = None
    reached_end = False

    for frame in container.decode(stream):
        time = _frame_time(frame, container_start)
        last_time = time
        if offset is None:
            # Output sample k lies at input sample k * in_rate / out_rate. Starting the resampler
            # on an input index that is a multiple of in_rate / gcd keeps that map integral.
            in_rate = frame.sample_rate
            first_input = round(time * in_rate) if time is not None else 0
            step = in_rate // math.gcd(in_rate, sample_rate)
            skip = (-first_input) % step
            if skip >= frame.samples:
                continue
            if skip:
                frame = _drop_leading_samples(frame, skip)
            offset = (first_input + skip) * sample_rate // in_rate
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        if end is not None and time is not None and time > end:
            reached_end = True
            break
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))

    if not reached_end and last_time is not None:
        _check_not_truncated(path, container, stream, start, end, last_time)
    if not chunks:
        if start is None and end is None:
            raise ClipDecodeError(path, "zero decodable audio samples in the file")
        declared = _declared_end(container, stream)
        lasts = f" (the audio stream lasts {declared:.2f} s)" if declared is not None else ""
        raise ClipDecodeError(path, f"zero decodable audio samples in the span [{start}, {end}) s{lasts}")
    return np.concatenate(chunks).astype(np.float32, copy=False), offset or 0


def _drop_leading_samples(frame: av.AudioFrame, count: int) -> av.AudioFrame:
    """Return a copy of an audio frame without its first ``count`` samples."""
    array = frame.to_ndarray()
    if frame.format.is_planar:
        array = array[:, count:]
    else:
        channels = len(frame.layout.channels)
        array = array[:, count * channels :]
    trimmed = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=frame.format.name, layout=frame.layout.name)
    trimmed.sample_rate = frame.sample_rate
    trimmed.time_base = frame.time_base
    if frame.pts is not None and frame.time_base is not None:
        trimmed.pts = frame.pts + round(count / frame.sample_rate / frame.time_base)
    return trimmed


def log_spectrogram(samples: np.ndarray, cfg: AudioDecodeConfig, path: str = "") -> np.ndarray:
    """Compute the z-scored log spectrogram of mono samples with the MER-DG recipe.

    Keeps the first ``cfg.num_samples`` samples (tiling a shorter input), clips to [-1, 1], then
    ``scipy.signal.spectrogram(x, cfg.sample_rate, nperseg, noverlap)`` with scipy's other
    defaults, ``log(S + 1e-7)`` and ``(x - mean) / (std + 1e-9)``. Computed in float64.

    Raises:
        ClipDecodeError: the samples are all zero or all equal after clipping (a silent track
            has no spectrum to z-score), or some are NaN or infinite (a damaged float wav).

    Returns:
        float32 array of shape ``cfg.spectrogram_shape``.
    """
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    if samples.size == 0:
        raise ClipDecodeError(path, "zero decodable audio samples")
    finite = np.isfinite(samples)
    if not finite.all():
        raise ClipDecodeError(path, f"audio track has {int((~finite).sum())} NaN or infinite samples")
    if not np.any(samples):
        raise ClipDecodeError(path, "silent audio track: every sample in the span is zero")

    repeats = math.ceil(cfg.num_samples / samples.size)
    samples = np.tile(samples, repeats)[: cfg.num_samples]
    samples = np.clip(samples, -1.0, 1.0)
    if np.ptp(samples) == 0:
        # The spectrogram removes the mean of each segment, so a constant track gives a flat
        # spectrogram whose z-score is all zeros.
        raise ClipDecodeError(
            path, f"silent audio track: every sample in the span is {samples[0]:g} after clipping to [-1, 1], "
            "a constant offset without sound"
        )

    _, _, power = scipy.signal.spectrogram(samples, cfg.sample_rate, nperseg=cfg.nperseg, noverlap=cfg.noverlap)
    log_power = np.log(power + LOG_EPSILON)
    normalized = (log_power - log_power.mean()) / (log_power.std() + ZSCORE_EPSILON)

    if normalized.shape != cfg.spectrogram_shape:
        raise ClipDecodeError(path, f"spectrogram shape {normalized.shape} differs from {cfg.spectrogram_shape}")
    return normalized.astype(np.float32)


def decode_audio(
    path: str | os.PathLike,
    cfg: AudioDecodeConfig,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Decode a file's audio track into the z-scored log spectrogram of its span.

    ``path`` is a wav or any container with an audio stream (the track of an mp4 or avi).

    Returns:
        float32 array of shape ``cfg.spectrogram_shape`` (frequency bins, time frames).
    """
    samples = load_audio_samples(path, cfg.sample_rate, start, end)
    return log_spectrogram(samples, cfg, os.fspath(path))


# ----------------------------------------------------------------------------------------------
# Clips


def decode_clip(clip: Clip, modalities: Sequence[str], cfg: DataConfig) -> dict[str, np.ndarray]:
    """Decode the requested modalities of one clip, keyed by modality name.

    Raises:
        ClipDecodeError: a modality has no path in the clip, its file cannot be decoded, or the
            flow and the video last different times (``check_flow_length``).
    """
    decoded: dict[str, np.ndarray] = {}
    for modality in modalities:
        if modality == "video":
            if not clip.video:
                raise ClipDecodeError(clip.clip_id, "video requested but the clip has no video path")
            decoded["video"] = decode_video(
                clip.video, cfg.video, clip.start, clip.end, frames=clip.frame_span("video")
            )
        elif modality == "audio":
            if not clip.audio:
                raise ClipDecodeError(clip.clip_id, "audio requested but the clip has no audio path")
            decoded["audio"] = decode_audio(clip.audio, cfg.audio, *clip.audio_span())
        elif modality == "flow":
            if not clip.flow_x or not clip.flow_y:
                raise ClipDecodeError(clip.clip_id, "flow requested but the clip lacks a flow_x or flow_y path")
            decoded["flow"] = decode_flow(
                clip.flow_x, clip.flow_y, cfg.flow, clip.start, clip.end, frames=clip.frame_span("flow")
            )
            check_flow_length(clip)
        else:
            raise ValueError(f"unknown modality {modality!r}; choose from video, audio, flow")
    return decoded


def _span_length(path: str, start: float | None, end: float | None) -> tuple[float, float] | None:
    """Return the length (s) of a video file's span and its frame period (s) from the header, or None if unknown."""
    container = _open_file(path)
    try:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        declared = _declared_end(container, stream)
        if declared is None:
            return None
        span_end = declared if end is None else min(end, declared)
        period = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
        return max(0.0, span_end - (start or 0.0)), period
    finally:
        container.close()


def check_flow_length(clip: Clip) -> None:
    """Raise when a clip's flow video and RGB video last different times in the clip's span.

    Stored flow may have another frame rate than its video (flow at half the rate, or one frame
    fewer), so the lengths are compared in seconds from the file headers, with the truncation
    tolerance: 0.5 s or 3 frame periods of the slower stream, whichever is longer. Only video
    files are compared, because an image sequence has no frame rate of its own. A video file
    that cannot be opened is left to the video's own decode to report.

    Raises:
        ClipDecodeError: the lengths differ by more than the tolerance; the path is ``flow_x``.
    """
    if not clip.video or not clip.flow_x or clip.frame_span("video") or clip.frame_span("flow"):
        return
    if _is_sequence_pattern(clip.video) or _is_sequence_pattern(clip.flow_x):
        return
    try:
        video = _span_length(clip.video, clip.start, clip.end)
    except (ClipDecodeError, *_PYAV_ERRORS):
        return
    flow = _span_length(clip.flow_x, clip.start, clip.end)
    if video is None or flow is None:
        return
    (video_length, video_period), (flow_length, flow_period) = video, flow
    tolerance = max(_TRUNCATION_TOLERANCE_S, 3 * max(video_period, flow_period))
    if abs(flow_length - video_length) > tolerance:
        raise ClipDecodeError(
            clip.flow_x,
            f"flow and video lengths differ: the flow lasts {flow_length:.2f} s but the video {clip.video} lasts "
            f"{video_length:.2f} s in the clip's span (tolerance {tolerance:.2f} s); compute the flow from this video",
        )


def output_shapes(modalities: Sequence[str], cfg: DataConfig) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Return the array shape and dtype ``decode_clip`` produces for each modality."""
    shapes = {
        "video": ((cfg.video.num_frames, cfg.video.frame_size, cfg.video.frame_size, 3), np.dtype(np.uint8)),
        "audio": (tuple(cfg.audio.spectrogram_shape), np.dtype(np.float32)),
        "flow": ((cfg.flow.num_frames, cfg.flow.frame_size, cfg.flow.frame_size, 2), np.dtype(np.uint8)),
    }
    return {modality: shapes[modality] for modality in modalities}


__all__ = [
    "check_flow_length",
    "decode_audio",
    "decode_clip",
    "decode_flow",
    "decode_video",
    "load_audio_samples",
    "log_spectrogram",
    "output_shapes",
    "sample_frame_indices",
]

