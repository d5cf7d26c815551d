"""Tests of the generated benchmark: real media files written with PyAV and read back."""

from __future__ import annotations

import json
import logging
import threading
import wave
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from merdg.config import BenchmarkConfig, ConfigError
from merdg.data import benchmark
from merdg.data.benchmark import (
    DOMAINS,
    FLOW_SCALE,
    HUM_HZ,
    MANIFEST_NAME,
    MARKER_NAME,
    config_hash,
    cue_gains,
    cue_levels,
    cue_mappings,
    ensure_benchmark,
    read_manifest,
)
from merdg.data.clips import DatasetError

SMALL = BenchmarkConfig(num_classes=3, clips_per_class=2, num_frames=8, frame_size=32, fps=8)
"""3 domains x 3 classes x 2 clips of 8 frames at 32 pixels."""

SIGNAL_FIELDS = ("stem", "domain", "split", "label", "class_name", "angle", "horizontal_sign", "speed",
                 "velocity_x", "velocity_y", "start_x", "start_y", "radius", "pitch_hz")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> benchmark.BenchmarkInfo:
    return ensure_benchmark(SMALL, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def small_twin(tmp_path_factory) -> benchmark.BenchmarkInfo:
    return ensure_benchmark(replace(SMALL, cue=False), tmp_path_factory.mktemp("cache"))


def decode_gray(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="gray") for frame in container.decode(video=0)])


def decode_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def decode_mp4_audio(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)], axis=1)[0]


def read_wav(path: Path) -> tuple[np.ndarray, int, int, int]:
    """Return the samples in [-1, 1], channel count, sample width in bytes and rate."""
    with wave.open(str(path), "rb") as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
        return pcm / 32767.0, handle.getnchannels(), handle.getsampwidth(), handle.getframerate()


def decode_flow(root: Path, row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Return flow x and y of a clip in pixels per frame."""
    folder = root / row["domain"] / "flow"
    flow_x = (decode_gray(folder / f"{row['stem']}_flow_x.mp4").astype(float) - 128.0) / FLOW_SCALE
    flow_y = (decode_gray(folder / f"{row['stem']}_flow_y.mp4").astype(float) - 128.0) / FLOW_SCALE
    return flow_x, flow_y


def decode_all(root: Path) -> dict[str, np.ndarray]:
    """Return every decoded media array of a benchmark, keyed by file name."""
    arrays = {}
    for row in read_manifest(root):
        folder = root / row["domain"]
        stem = row["stem"]
        arrays[f"{stem}.mp4"] = decode_rgb(folder / "videos" / f"{stem}.mp4")
        arrays[f"{stem}.mp4 audio"] = decode_mp4_audio(folder / "videos" / f"{stem}.mp4")
        arrays[f"{stem}_flow_x.mp4"] = decode_gray(folder / "flow" / f"{stem}_flow_x.mp4")
        arrays[f"{stem}_flow_y.mp4"] = decode_gray(folder / "flow" / f"{stem}_flow_y.mp4")
        arrays[f"{stem}.wav"] = read_wav(folder / "audio" / f"{stem}.wav")[0]
    return arrays


def object_region(row: dict[str, str], num_frames: int, size: int, scale: float) -> np.ndarray:
    """Return a (T, H, W) mask of pixels within ``scale * radius`` of the object centre."""
    coords = np.arange(size) + 0.5
    steps = np.arange(num_frames)[:, None, None]
    centre_x = float(row["start_x"]) + float(row["velocity_x"]) * steps
    centre_y = float(row["start_y"]) + float(row["velocity_y"]) * steps
    distance = np.hypot(coords[None, None, :] - centre_x, coords[None, :, None] - centre_y)
    return distance < scale * float(row["radius"])


def test_layout_has_every_file(small):
    rows = read_manifest(small.root)

    assert small.domains == ("studio", "street", "retro")
    assert small.num_classes == 3
    assert small.class_names == ("angle000", "angle090", "angle180")
    assert small.root.name == f"benchmark-{config_hash(SMALL)}"
    assert (small.root / MARKER_NAME).is_file()
    assert len(rows) == len(DOMAINS) * SMALL.num_classes * SMALL.clips_per_class
    for row in rows:
        folder = small.root / row["domain"]
        assert (folder / "videos" / f"{row['stem']}.mp4").is_file()
        assert (folder / "flow" / f"{row['stem']}_flow_x.mp4").is_file()
        assert (folder / "flow" / f"{row['stem']}_flow_y.mp4").is_file()
        assert (folder / "audio" / f"{row['stem']}.wav").is_file()


def test_marker_records_config(small):
    marker = json.loads((small.root / MARKER_NAME).read_text())

    assert marker["config"]["num_classes"] == SMALL.num_classes
    assert marker["domains"] == list(DOMAINS)
    assert marker["cue_gains"]["flow"] == pytest.approx(cue_gains(SMALL).flow)


def test_split_lists_follow_hac_convention(small):
    rows = read_manifest(small.root)
    for domain in DOMAINS:
        listed = {}
        for split in ("train", "test"):
            raw = (small.root / f"HAC_{split}_only_{domain}.csv").read_bytes()
            assert raw.endswith(b"\r\n")
            lines = raw.decode().split("\r\n")[:-1]
            assert all("\n" not in line and "\r" not in line for line in lines)
            for line in lines:
                name, label = line.split(",")
                assert name.endswith(".mp4")
                assert 0 <= int(label) < SMALL.num_classes
                listed[name] = (split, int(label))
        expected = {f"{row['stem']}.mp4": (row["split"], int(row["label"])) for row in rows if row["domain"] == domain}
        assert listed == expected
        test_count = sum(1 for split, _ in listed.values() if split == "test")
        assert test_count == SMALL.num_classes * benchmark.num_test_clips(SMALL)


def test_videos_have_h264_and_aac_streams(small):
    for row in read_manifest(small.root):
        path = small.root / row["domain"] / "videos" / f"{row['stem']}.mp4"
        with av.open(str(path)) as container:
            assert len(container.streams.video) == 1
            assert len(container.streams.audio) == 1
            video = container.streams.video[0]
            audio = container.streams.audio[0]
            assert video.codec_context.name == "h264"
            assert video.codec_context.pix_fmt == "yuv420p"
            assert video.codec_context.width == SMALL.frame_size
            assert video.codec_context.height == SMALL.frame_size
            assert audio.codec_context.name == "aac"
            assert audio.codec_context.sample_rate == SMALL.sample_rate
        frames = decode_rgb(path)
        assert frames.shape == (SMALL.num_frames, SMALL.frame_size, SMALL.frame_size, 3)


def test_flow_videos_decode_as_gray(small):
    row = read_manifest(small.root)[0]
    for axis in ("x", "y"):
        path = small.root / row["domain"] / "flow" / f"{row['stem']}_flow_{axis}.mp4"
        with av.open(str(path)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
        frames = decode_gray(path)
        assert frames.shape == (SMALL.num_frames, SMALL.frame_size, SMALL.frame_size)


def test_flow_pan_and_motion_match_manifest(small):
    for row in read_manifest(small.root):
        flow_x, flow_y = decode_flow(small.root, row)
        inside = object_region(row, SMALL.num_frames, SMALL.frame_size, 0.6)
        outside = ~object_region(row, SMALL.num_frames, SMALL.frame_size, 1.6)
        pan = flow_y[outside].mean()

        assert pan == pytest.approx(float(row["flow_pan"]), abs=0.15), row["stem"]
        assert flow_x[outside].mean() == pytest.approx(0.0, abs=0.15), row["stem"]
        assert flow_x[inside].mean() == pytest.approx(float(row["velocity_x"]), abs=0.4), row["stem"]
        assert flow_y[inside].mean() - pan == pytest.approx(float(row["velocity_y"]), abs=0.4), row["stem"]


def test_wav_decodes_and_matches_mp4_audio(small):
    expected_samples = SMALL.sample_rate * SMALL.num_frames // SMALL.fps
    for row in read_manifest(small.root):
        folder = small.root / row["domain"]
        samples, channels, width, rate = read_wav(folder / "audio" / f"{row['stem']}.wav")
        assert channels == 1
        assert width == 2
        assert rate == SMALL.sample_rate
        assert len(samples) == expected_samples
        assert np.abs(samples).max() < 1.0

        track = decode_mp4_audio(folder / "videos" / f"{row['stem']}.mp4")
        assert len(track) >= expected_samples
        head = int(0.9 * expected_samples)
        assert np.corrcoef(track[:head], samples[:head])[0, 1] > 0.98, row["stem"]


def test_hum_amplitude_matches_manifest(small):
    for row in read_manifest(small.root):
        samples, _, _, rate = read_wav(small.root / row["domain"] / "audio" / f"{row['stem']}.wav")
        times = np.arange(len(samples)) / rate
        sine = np.mean(samples * np.sin(2 * np.pi * HUM_HZ * times))
        cosine = np.mean(samples * np.cos(2 * np.pi * HUM_HZ * times))
        amplitude = float(row["hum_amplitude"])
        assert 2 * np.hypot(sine, cosine) == pytest.approx(amplitude, rel=0.2, abs=0.003), row["stem"]


def test_video_brightness_carries_cue(small, small_twin):
    gain = cue_gains(SMALL).video
    for row in read_manifest(small.root):
        relative = Path(row["domain"]) / "videos" / f"{row['stem']}.mp4"
        difference = decode_rgb(small.root / relative).mean() - decode_rgb(small_twin.root / relative).mean()
        assert difference == pytest.approx(gain * float(row["cue_level"]), abs=1.0), row["stem"]


def test_generation_is_deterministic(small, tmp_path):
    again = ensure_benchmark(SMALL, tmp_path, root=tmp_path / "again")
    first = decode_all(small.root)
    second = decode_all(again.root)

    assert (again.root / MANIFEST_NAME).read_text() == (small.root / MANIFEST_NAME).read_text()
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_other_seed_differs(small, tmp_path):
    other = ensure_benchmark(replace(SMALL, seed=1), tmp_path)
    rows = read_manifest(small.root)
    other_rows = read_manifest(other.root)

    assert other.root != small.root
    assert [row["angle"] for row in rows] != [row["angle"] for row in other_rows]
    row = rows[0]
    relative = Path(row["domain"]) / "videos" / f"{row['stem']}.mp4"
    assert not np.array_equal(decode_rgb(small.root / relative), decode_rgb(other.root / relative))


def test_no_cue_twin_keeps_class_signal(small, small_twin):
    rows = read_manifest(small.root)
    twin_rows = read_manifest(small_twin.root)

    assert small_twin.root != small.root
    assert len(rows) == len(twin_rows)
    for row, twin in zip(rows, twin_rows):
        for name in SIGNAL_FIELDS:
            assert twin[name] == row[name], (row["stem"], name)
        assert twin["cue_level"] == ""
        assert twin["cue_valid"] == ""
        level = float(row["cue_level"])
        for modality in ("s_video", "s_audio", "s_flow"):
            assert float(twin[modality]) == pytest.approx(float(row[modality]) - level, abs=1e-9)


def test_no_cue_twin_differs_only_by_hum(small, small_twin):
    for row in read_manifest(small_twin.root):
        relative = Path(row["domain"]) / "audio" / f"{row['stem']}.wav"
        difference = read_wav(small.root / relative)[0] - read_wav(small_twin.root / relative)[0]
        times = np.arange(len(difference)) / SMALL.sample_rate
        hum_basis = np.stack([np.sin(2 * np.pi * HUM_HZ * times), np.cos(2 * np.pi * HUM_HZ * times)], axis=1)
        coefficients = np.linalg.lstsq(hum_basis, difference, rcond=None)[0]
        residual = difference - hum_basis @ coefficients
        # Only the 16-bit rounding of both files remains once the hum is removed.
        assert np.sqrt(np.mean(residual**2)) < 1e-4, row["stem"]


def test_hiding_offsets_sum_to_zero(small, small_twin):
    for row in read_manifest(small.root):
        total = float(row["s_video"]) + float(row["s_audio"]) + float(row["s_flow"])
        assert total == pytest.approx(3 * float(row["cue_level"]), abs=1e-9)
    for row in read_manifest(small_twin.root):
        total = float(row["s_video"]) + float(row["s_audio"]) + float(row["s_flow"])
        assert total == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("num_classes", [3, 4, 5, 16])
def test_cue_mappings_differ_at_every_class(num_classes):
    cfg = BenchmarkConfig(num_classes=num_classes)
    mapping = cue_mappings(cfg)
    levels = cue_levels(num_classes)

    assert mapping.shape == (len(DOMAINS), num_classes)
    for domain_index in range(len(DOMAINS)):
        np.testing.assert_allclose(np.sort(mapping[domain_index]), levels)
    for first in range(len(DOMAINS)):
        for second in range(first + 1, len(DOMAINS)):
            assert np.all(mapping[first] != mapping[second]), (first, second)


def test_valid_cue_follows_domain_mapping(small):
    mapping = cue_mappings(SMALL)
    for row in read_manifest(small.root):
        if row["cue_valid"] == "1":
            expected = mapping[DOMAINS.index(row["domain"]), int(row["label"])]
            assert float(row["cue_level"]) == pytest.approx(expected), row["stem"]


def test_complete_cache_is_reused(small, caplog):
    marker = small.root / MARKER_NAME
    mtime = marker.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="merdg.data.benchmark"):
        info = ensure_benchmark(SMALL, small.root.parent)

    assert info == small
    assert marker.stat().st_mtime_ns == mtime
    assert "reusing" in caplog.text
    assert "generating" not in caplog.text
    assert sorted(path.name for path in small.root.parent.iterdir()) == [small.root.name]


def test_concurrent_calls_publish_one_copy(tmp_path):
    cfg = replace(SMALL, num_classes=2, seed=3)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_benchmark(cfg, tmp_path, workers=1)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 2
    assert results[0] == results[1]
    assert benchmark.is_complete(results[0].root, cfg)
    assert [path.name for path in tmp_path.iterdir()] == [results[0].root.name]


def test_root_with_other_content_raises(tmp_path):
    root = tmp_path / "taken"
    root.mkdir()
    (root / "notes.txt").write_text("not a benchmark")

    with pytest.raises(DatasetError, match="not empty"):
        ensure_benchmark(SMALL, tmp_path, root=root)


def test_root_with_other_config_raises(small, tmp_path):
    with pytest.raises(DatasetError, match="different config"):
        ensure_benchmark(replace(SMALL, seed=7), tmp_path, root=small.root)


def test_two_classes_warn_about_shared_mapping(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="merdg.data.benchmark"):
        ensure_benchmark(replace(SMALL, num_classes=2), tmp_path)

    assert "share a cue mapping" in caplog.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_classes", 1),
        ("clips_per_class", 1),
        ("test_fraction", 1.0),
        ("cue_validity", 1.5),
        ("cue_hiding", -0.1),
        ("signal_noise", -1.0),
        ("num_frames", 1),
        ("frame_size", 33),
        ("fps", 0),
        ("sample_rate", 8000),
    ],
)
def test_invalid_knob_raises_config_error(field, value):
    with pytest.raises(ConfigError, match=f"--data.benchmark.{field}"):
        BenchmarkConfig(**{field: value})


def nearest_level_accuracy(values: np.ndarray, labels: np.ndarray, mapping_row: np.ndarray) -> float:
    """Return how often the class whose mapped level is nearest to each value is the label."""
    predicted = np.argmin(np.abs(values[:, None] - mapping_row[None, :]), axis=1)
    return float(np.mean(predicted == labels))


def test_cue_is_hidden_in_each_modality(tmp_path):
    cfg = BenchmarkConfig(num_classes=5, clips_per_class=40, num_frames=2, frame_size=16, fps=2)
    info = ensure_benchmark(cfg, tmp_path)
    rows = read_manifest(info.root)
    mapping = cue_mappings(cfg)
    chance_cue = cfg.cue_validity + (1 - cfg.cue_validity) / cfg.num_classes

    for domain_index, domain in enumerate(DOMAINS):
        domain_rows = [row for row in rows if row["domain"] == domain]
        labels = np.array([int(row["label"]) for row in domain_rows])
        levels = np.array([float(row["cue_level"]) for row in domain_rows])
        streams = {m: np.array([float(row[m]) for row in domain_rows]) for m in ("s_video", "s_audio", "s_flow")}
        fused = (streams["s_video"] + streams["s_audio"] + streams["s_flow"]) / 3

        level_accuracy = nearest_level_accuracy(levels, labels, mapping[domain_index])
        fused_accuracy = nearest_level_accuracy(fused, labels, mapping[domain_index])
        assert level_accuracy == pytest.approx(chance_cue, abs=0.07), domain
        assert fused_accuracy == pytest.approx(level_accuracy, abs=1e-9), domain
        for name, values in streams.items():
            single_accuracy = nearest_level_accuracy(values, labels, mapping[domain_index])
            assert single_accuracy < 0.45, (domain, name)
            assert fused_accuracy - single_accuracy > 0.45, (domain, name)
