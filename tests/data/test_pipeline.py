"""Tests of the Ray Data decode stage and its Parquet cache, on a small tree of real media."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from merdg.config import AudioDecodeConfig, DataConfig, VideoDecodeConfig
from merdg.data.clips import DatasetError
from merdg.data.hac import read_hac
from merdg.data.pipeline import (
    MARKER_FILE,
    QUARANTINE_FILE,
    build_decode_cache,
    cache_key,
    read_decoded,
)
from tests.data.real_tree import build_real_hac_tree


@pytest.fixture(scope="module")
def hac_root(shared_data, tmp_path_factory) -> Path:
    """A HAC tree with one real row per split file: 6 clips over 3 domains."""
    return build_real_hac_tree(shared_data, tmp_path_factory.mktemp("hac"), rows_per_split=1)


@pytest.fixture(scope="module")
def built(hac_root, tmp_path_factory, ray_local):
    """The cache of every modality of the tree, built once, and the config that built it."""
    cfg = DataConfig(dataset="hac", root=hac_root, cache_dir=tmp_path_factory.mktemp("cache"), decode_batch_size=2)
    clips = read_hac(hac_root)
    return cfg, clips, build_decode_cache(clips, cfg)


def make_cfg(root: Path, cache_dir: Path, **changes) -> DataConfig:
    return DataConfig(dataset="hac", root=root, cache_dir=cache_dir, decode_batch_size=2, **changes)


def corrupt_video(clip_video: str, shared_data: Path) -> None:
    """Replace a clip's video with the first half of box.mp4 (the decoder fails mid-stream)."""
    data = (shared_data / "opencv-doc-media" / "box.mp4").read_bytes()
    os.unlink(clip_video)
    Path(clip_video).write_bytes(data[: len(data) // 2])


def test_cache_miss_then_hit(built):
    cfg, clips, first = built

    second = build_decode_cache(clips, cfg)

    assert first.num_decoded == 6
    assert first.num_clips == 6
    assert first.skipped == []
    assert first.quarantine_csv is None
    assert second.num_decoded == 0
    assert second.num_clips == 6
    assert second.path == first.path
    assert first.path == cfg.cache_dir / "decoded" / cache_key(clips, cfg)
    assert json.loads((first.path / MARKER_FILE).read_text())["num_clips"] == 6
    assert list(first.path.glob("*.parquet"))
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name], "staging folder left behind"


def test_read_decoded_shapes(built):
    cfg, _, result = built

    rows = read_decoded(result.path, domains=["human", "animal", "cartoon"], splits=["train", "test"]).take_all()

    assert len(rows) == 6
    for row in rows:
        assert row["video"].shape == (8, 32, 32, 3)
        assert row["video"].dtype == np.uint8
        assert row["audio"].shape == cfg.audio.spectrogram_shape
        assert row["audio"].dtype == np.float32
        assert row["flow"].shape == (8, 32, 32, 2)
        assert row["flow"].dtype == np.uint8
        assert row["video"].std() > 5, f"{row['clip_id']} video is flat"
        assert abs(float(row["audio"].std()) - 1.0) < 1e-3


def test_read_decoded_filters(built):
    _, clips, result = built
    labels = {clip.clip_id: clip.label for clip in clips}

    human_train = read_decoded(result.path, domains=["human"], splits=["train"]).take_all()
    sources = read_decoded(result.path, domains=["animal", "cartoon"], splits=["train", "test"]).take_all()
    tests = read_decoded(result.path, domains=["human", "animal", "cartoon"], splits=["test"]).take_all()

    assert [(row["domain"], row["split"]) for row in human_train] == [("human", "train")]
    assert human_train[0]["label"] == labels[human_train[0]["clip_id"]]
    assert sorted(row["domain"] for row in sources) == ["animal", "animal", "cartoon", "cartoon"]
    assert {row["split"] for row in tests} == {"test"}
    assert len(tests) == 3


def test_decoded_matches_decode_clip(built):
    from merdg.data.decoding import decode_clip

    cfg, clips, result = built
    clip = next(c for c in clips if c.domain == "cartoon")

    row = next(r for r in read_decoded(result.path, domains=["cartoon"]).take_all() if r["clip_id"] == clip.clip_id)

    expected = decode_clip(clip, cfg.modalities, cfg)
    np.testing.assert_array_equal(row["video"], expected["video"])
    np.testing.assert_array_equal(row["audio"], expected["audio"])
    np.testing.assert_array_equal(row["flow"], expected["flow"])


def test_cache_key_changes(hac_root, tmp_path):
    clips = read_hac(hac_root)
    cfg = make_cfg(hac_root, tmp_path)
    key = cache_key(clips, cfg)

    assert cache_key(clips, make_cfg(hac_root, tmp_path)) == key
    assert cache_key(list(reversed(clips)), cfg) == key
    assert cache_key(clips, make_cfg(hac_root, tmp_path, video=VideoDecodeConfig(frame_size=48, crop_size=48))) != key
    assert cache_key(clips, make_cfg(hac_root, tmp_path, audio=AudioDecodeConfig(nperseg=512, noverlap=256))) != key
    assert cache_key(clips, make_cfg(hac_root, tmp_path, modalities=["video", "audio"])) != key
    assert cache_key(clips[:-1], cfg) != key
    relabelled = [dataclasses.replace(clips[0], label=(clips[0].label + 1) % 7), *clips[1:]]
    assert cache_key(relabelled, cfg) != key
    # Settings of a modality that is not decoded do not change the key.
    video_only = make_cfg(hac_root, tmp_path, modalities=["video"])
    assert cache_key(clips, video_only) == cache_key(
        clips, make_cfg(hac_root, tmp_path, modalities=["video"], audio=AudioDecodeConfig(nperseg=512, noverlap=256))
    )


def test_cache_key_tracks_source_files(shared_data, tmp_path):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = read_hac(root)
    cfg = make_cfg(root, tmp_path / "cache", modalities=["audio"])
    key = cache_key(clips, cfg)

    audio = Path(clips[0].audio)
    stat = audio.stat()
    os.utime(audio, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = cache_key(clips, cfg)
    audio.unlink()
    removed = cache_key(clips, cfg)

    assert touched != key
    assert removed not in (key, touched)
    # The video file is not part of an audio-only key.
    Path(clips[0].video).unlink()
    assert cache_key(clips, cfg) == removed


def test_changed_parameter_builds_new_cache(built, hac_root):
    cfg, clips, result = built
    audio_only = make_cfg(hac_root, cfg.cache_dir, modalities=["audio"])
    smaller = make_cfg(hac_root, cfg.cache_dir, modalities=["audio"],
                       audio=AudioDecodeConfig(num_samples=16000, nperseg=128, noverlap=64))

    first = build_decode_cache(clips, audio_only)
    second = build_decode_cache(clips, smaller)

    assert first.path != result.path
    assert second.path not in (first.path, result.path)
    assert first.num_decoded == second.num_decoded == 6
    rows = read_decoded(second.path, domains=["human"], splits=["train"]).take_all()
    assert rows[0]["audio"].shape == (65, 249)
    assert "video" not in rows[0]
    assert "flow" not in rows[0]


def test_corrupt_clip_raises_naming_path(shared_data, tmp_path, ray_local):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = read_hac(root)
    bad = next(clip for clip in clips if clip.domain == "animal")
    corrupt_video(bad.video, shared_data)
    cfg = make_cfg(root, tmp_path / "cache", modalities=["video"])

    with pytest.raises(DatasetError) as caught:
        build_decode_cache(clips, cfg)

    message = str(caught.value)
    assert "1 clip(s) failed to decode" in message
    assert bad.video in message
    assert "--data.skip_bad_clips true" in message
    assert not list((tmp_path / "cache" / "decoded").iterdir()), "a failed build left a cache folder"


def test_corrupt_clip_skipped_and_quarantined(shared_data, tmp_path, ray_local):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = read_hac(root)
    bad = next(clip for clip in clips if clip.domain == "animal")
    corrupt_video(bad.video, shared_data)
    os.unlink(next(clip for clip in clips if clip.domain == "cartoon" and clip.split == "test").video)
    cfg = make_cfg(root, tmp_path / "cache", modalities=["video"], skip_bad_clips=True)

    result = build_decode_cache(clips, cfg)

    assert result.num_decoded == 6
    assert result.num_clips == 4
    assert [item["clip_id"] for item in result.skipped] == sorted([bad.clip_id, "cartoon/test/" + Path(
        next(c for c in clips if c.domain == "cartoon" and c.split == "test").video).stem])
    reasons = {item["clip_id"]: item["reason"] for item in result.skipped}
    assert "undecodable" in reasons[bad.clip_id]
    assert "file not found" in reasons[next(r for r in reasons if r.startswith("cartoon"))]
    assert result.quarantine_csv == result.path / QUARANTINE_FILE

    with result.quarantine_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["clip_id", "split_file", "row", "path", "reason"]
    quarantined = next(row for row in rows if row["clip_id"] == bad.clip_id)
    assert quarantined["path"] == bad.video
    assert quarantined["split_file"] == bad.source
    assert quarantined["row"] == str(bad.row)

    remaining = read_decoded(result.path, domains=["human", "animal", "cartoon"]).take_all()
    assert sorted(row["clip_id"] for row in remaining) == sorted(
        clip.clip_id for clip in clips if clip.clip_id not in reasons
    )

    again = build_decode_cache(clips, cfg)
    assert again.num_decoded == 0
    assert again.skipped == result.skipped
    assert again.quarantine_csv == result.quarantine_csv
    # The same cache, asked for without skipping, reports the bad clips instead of using it.
    with pytest.raises(DatasetError, match="2 clip\\(s\\) failed to decode"):
        build_decode_cache(clips, dataclasses.replace(cfg, skip_bad_clips=False))


def test_every_clip_failed(shared_data, tmp_path, ray_local):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = [clip for clip in read_hac(root) if clip.domain == "human"]
    for clip in clips:
        os.unlink(clip.audio)
    cfg = make_cfg(root, tmp_path / "cache", modalities=["audio"], skip_bad_clips=True)

    with pytest.raises(DatasetError, match=r"every clip \(2\) failed to decode") as caught:
        build_decode_cache(clips, cfg)
    assert clips[0].audio in str(caught.value)


def test_empty_clip_list(tmp_path):
    with pytest.raises(DatasetError, match="no clips to decode"):
        build_decode_cache([], make_cfg(tmp_path, tmp_path / "cache"))


def test_duplicate_clip_ids(hac_root, tmp_path):
    clips = read_hac(hac_root)
    with pytest.raises(DatasetError, match="duplicate clip id"):
        build_decode_cache([clips[0], clips[0]], make_cfg(hac_root, tmp_path / "cache"))


def test_folder_without_marker_is_rebuilt(hac_root, tmp_path, ray_local):
    clips = [clip for clip in read_hac(hac_root) if clip.domain == "animal"]
    cfg = make_cfg(hac_root, tmp_path / "cache", modalities=["audio"])
    leftover = cfg.cache_dir / "decoded" / cache_key(clips, cfg)
    leftover.mkdir(parents=True)
    (leftover / "part-0.parquet").write_bytes(b"half written")

    result = build_decode_cache(clips, cfg)

    assert result.path == leftover
    assert result.num_decoded == 2
    assert (leftover / MARKER_FILE).is_file()
    assert not (leftover / "part-0.parquet").exists()
    assert len(read_decoded(result.path, domains=["animal"]).take_all()) == 2


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_cache_is_decoded_again(hac_root, tmp_path, ray_local, damage):
    clips = [clip for clip in read_hac(hac_root) if clip.domain == "human"]
    cfg = make_cfg(hac_root, tmp_path / "cache", modalities=["audio"])
    first = build_decode_cache(clips, cfg)
    parquet = sorted(first.path.glob("*.parquet"))[0]
    if damage == "delete":
        parquet.unlink()
    else:
        parquet.write_bytes(parquet.read_bytes()[:100])

    second = build_decode_cache(clips, cfg)

    assert second.num_decoded == 2
    assert len(read_decoded(second.path, domains=["human"]).take_all()) == 2
