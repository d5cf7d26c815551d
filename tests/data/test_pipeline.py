"""Tests of the Ray Data decode stage and its per-modality Parquet caches, on a small tree of real media."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import ray.exceptions

from merdg.config import AudioDecodeConfig, DataConfig, VideoDecodeConfig
from merdg.data.clips import DatasetError
from merdg.data.decoding import decode_clip
from merdg.data.hac import read_hac
from merdg.data.cache_sets import MARKER_FILE, QUARANTINE_FILE, modality_cache_dir, read_decoded
from merdg.data.pipeline import build_decode_cache, modality_key, set_key
from tests.data.real_tree import build_real_hac_tree

ALL_DOMAINS = ["human", "animal", "cartoon"]
SMALL_AUDIO = AudioDecodeConfig(num_samples=16000, nperseg=128, noverlap=64)
"""Audio settings other than the default, with spectrograms of shape (65, 249)."""


@pytest.fixture(scope="module")
def hac_root(shared_data, tmp_path_factory) -> Path:
    """A HAC tree with one real row per split file: 6 clips over 3 domains."""
    return build_real_hac_tree(shared_data, tmp_path_factory.mktemp("hac"), rows_per_split=1)


@pytest.fixture(scope="module")
def built(hac_root, tmp_path_factory, ray_local):
    """The cache of every modality of the tree, built once, and the config that built it."""
    cfg = make_cfg(hac_root, tmp_path_factory.mktemp("cache"))
    clips = read_hac(hac_root)
    return cfg, clips, build_decode_cache(clips, cfg)


def make_cfg(root: Path, cache_dir: Path, **changes) -> DataConfig:
    """A config of the test tree that decodes parts of 2 clips unless ``changes`` sets decode_batch_size."""
    changes.setdefault("decode_batch_size", 2)
    return DataConfig(dataset="hac", root=root, cache_dir=cache_dir, **changes)


def corrupt_video(clip_video: str, shared_data: Path) -> None:
    """Replace a clip's video with the first half of box.mp4 (the decoder fails mid-stream)."""
    data = (shared_data / "opencv-doc-media" / "box.mp4").read_bytes()
    os.unlink(clip_video)
    Path(clip_video).write_bytes(data[: len(data) // 2])


def rows_by_id(path: Path, **kwargs) -> dict[str, dict]:
    return {row["clip_id"]: row for row in read_decoded(path, domains=ALL_DOMAINS, **kwargs).take_all()}


def leftover_staging(cache_dir: Path) -> list[Path]:
    return [path for path in (cache_dir / "decoded").rglob("*") if ".incomplete-" in path.name]


def test_cache_miss_then_hit(built):
    cfg, clips, first = built

    second = build_decode_cache(clips, cfg)

    assert first.decoded_counts == {"video": 6, "audio": 6, "flow": 6}
    assert first.reused_counts == {"video": 0, "audio": 0, "flow": 0}
    assert first.num_decoded == 6
    assert first.num_clips == 6
    assert first.skipped == []
    assert first.quarantine_csv is None
    assert second.decoded_counts == {"video": 0, "audio": 0, "flow": 0}
    assert second.reused_counts == {"video": 6, "audio": 6, "flow": 6}
    assert second.num_decoded == 0
    assert second.num_clips == 6
    assert second.path == first.path
    assert leftover_staging(cfg.cache_dir) == []


def test_cache_layout(built):
    cfg, clips, result = built

    keys = {modality: modality_key(clips, modality, cfg) for modality in cfg.modalities}

    assert result.path == cfg.cache_dir / "decoded" / "sets" / set_key(keys)
    for modality, key in keys.items():
        folder = modality_cache_dir(cfg.cache_dir, modality, key)
        marker = json.loads((folder / MARKER_FILE).read_text())
        assert result.modalities[modality].path == folder
        assert marker["num_clips"] == 6
        # 6 clips sorted by id in parts of decode_batch_size=2.
        assert [part["file"] for part in marker["parts"]] == [f"part-{i:05d}.parquet" for i in range(3)]
        assert sorted(path.name for path in folder.glob("*.parquet")) == [part["file"] for part in marker["parts"]]
    set_marker = json.loads((result.path / MARKER_FILE).read_text())
    assert set_marker["num_clips"] == 6
    assert len(set_marker["parts"]) == 3


def test_read_decoded_shapes(built):
    cfg, _, result = built

    rows = read_decoded(result.path, domains=ALL_DOMAINS, splits=["train", "test"]).take_all()

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
    tests = read_decoded(result.path, domains=ALL_DOMAINS, splits=["test"]).take_all()

    assert [(row["domain"], row["split"]) for row in human_train] == [("human", "train")]
    assert human_train[0]["label"] == labels[human_train[0]["clip_id"]]
    assert sorted(row["domain"] for row in sources) == ["animal", "animal", "cartoon", "cartoon"]
    assert {row["split"] for row in tests} == {"test"}
    assert len(tests) == 3


def test_read_decoded_no_matching_rows(built):
    _, _, result = built

    dataset = read_decoded(result.path, domains=["no-such-domain"])

    assert dataset.count() == 0
    assert set(dataset.schema().names) == {"clip_id", "domain", "split", "label", "video", "audio", "flow"}


def test_read_decoded_modality_subset(built):
    _, _, result = built

    rows = read_decoded(result.path, domains=ALL_DOMAINS, modalities=["flow", "audio"]).take_all()

    assert len(rows) == 6
    assert list(rows[0]) == ["clip_id", "domain", "split", "label", "audio", "flow"]
    with pytest.raises(DatasetError, match="not in the decode cache set"):
        read_decoded(result.path, domains=ALL_DOMAINS, modalities=["depth"])


def test_read_decoded_rejects_other_folders(tmp_path):
    with pytest.raises(DatasetError, match="no decode cache set"):
        read_decoded(tmp_path, domains=ALL_DOMAINS)


def test_decoded_matches_decode_clip(built):
    cfg, clips, result = built
    rows = rows_by_id(result.path)

    for clip in clips:
        expected = decode_clip(clip, cfg.modalities, cfg)
        row = rows[clip.clip_id]
        assert (row["domain"], row["split"], row["label"]) == (clip.domain, clip.split, clip.label)
        for modality in cfg.modalities:
            np.testing.assert_array_equal(row[modality], expected[modality], err_msg=f"{clip.clip_id} {modality}")


def test_modality_key_changes(hac_root, tmp_path):
    clips = read_hac(hac_root)
    cfg = make_cfg(hac_root, tmp_path)
    keys = {modality: modality_key(clips, modality, cfg) for modality in cfg.modalities}

    def changed(new_clips, new_cfg) -> set[str]:
        return {modality for modality in cfg.modalities if modality_key(new_clips, modality, new_cfg) != keys[modality]}

    assert changed(clips, make_cfg(hac_root, tmp_path)) == set()
    assert changed(list(reversed(clips)), cfg) == set()
    assert changed(clips, make_cfg(hac_root, tmp_path, decode_batch_size=4)) == set()
    assert changed(clips, make_cfg(hac_root, tmp_path, audio=SMALL_AUDIO)) == {"audio"}
    assert changed(clips, make_cfg(hac_root, tmp_path, video=VideoDecodeConfig(frame_size=48, crop_size=48))) == {"video"}
    assert changed(clips[:-1], cfg) == {"video", "audio", "flow"}
    relabelled = [dataclasses.replace(clips[0], label=(clips[0].label + 1) % 7), *clips[1:]]
    assert changed(relabelled, cfg) == {"video", "audio", "flow"}
    respanned = [dataclasses.replace(clips[0], start=0.5, end=1.5), *clips[1:]]
    assert changed(respanned, cfg) == {"video", "audio", "flow"}
    moved_audio = [dataclasses.replace(clips[0], audio=clips[0].audio + ".moved.wav"), *clips[1:]]
    assert changed(moved_audio, cfg) == {"audio"}
    audio_span = [dataclasses.replace(clips[0], audio_start=0.25, audio_end=1.25), *clips[1:]]
    assert changed(audio_span, cfg) == {"audio"}
    video_frames = [dataclasses.replace(clips[0], video_start_frame=1, video_stop_frame=20), *clips[1:]]
    assert changed(video_frames, cfg) == {"video"}


def test_modality_key_tracks_source_files(shared_data, tmp_path):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = read_hac(root)
    cfg = make_cfg(root, tmp_path / "cache")
    audio_key = modality_key(clips, "audio", cfg)
    video_key = modality_key(clips, "video", cfg)

    audio = Path(clips[0].audio)
    stat = audio.stat()
    os.utime(audio, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = modality_key(clips, "audio", cfg)
    audio.unlink()
    removed = modality_key(clips, "audio", cfg)

    assert touched != audio_key
    assert removed not in (audio_key, touched)
    assert modality_key(clips, "video", cfg) == video_key
    Path(clips[0].video).unlink()
    assert modality_key(clips, "audio", cfg) == removed
    assert modality_key(clips, "video", cfg) != video_key


def test_changed_audio_parameter_decodes_audio_only(built, hac_root):
    cfg, clips, first = built
    changed = make_cfg(hac_root, cfg.cache_dir, audio=SMALL_AUDIO)

    second = build_decode_cache(clips, changed)
    third = build_decode_cache(clips, changed)

    assert second.decoded_counts == {"video": 0, "audio": 6, "flow": 0}
    assert second.reused_counts == {"video": 6, "audio": 0, "flow": 6}
    assert third.decoded_counts == {"video": 0, "audio": 0, "flow": 0}
    assert second.path != first.path
    assert second.modalities["video"].path == first.modalities["video"].path
    assert second.modalities["audio"].path != first.modalities["audio"].path
    before = rows_by_id(first.path)
    after = rows_by_id(second.path)
    assert sorted(after) == sorted(before)
    for clip_id, row in after.items():
        assert row["audio"].shape == (65, 249)
        np.testing.assert_array_equal(row["video"], before[clip_id]["video"])
        np.testing.assert_array_equal(row["flow"], before[clip_id]["flow"])


def test_added_modality_decodes_only_it(hac_root, tmp_path, ray_local):
    clips = read_hac(hac_root)

    video = build_decode_cache(clips, make_cfg(hac_root, tmp_path, modalities=["video"]))
    video_flow = build_decode_cache(clips, make_cfg(hac_root, tmp_path, modalities=["video", "flow"]))

    assert video.decoded_counts == {"video": 6}
    assert video_flow.decoded_counts == {"video": 0, "flow": 6}
    assert video_flow.reused_counts == {"video": 6, "flow": 0}
    rows = read_decoded(video_flow.path, domains=ALL_DOMAINS).take_all()
    assert len(rows) == 6
    assert {"video", "flow"} <= set(rows[0])
    assert "audio" not in rows[0]


def test_parts_of_other_sizes_join_correctly(hac_root, tmp_path, ray_local):
    clips = read_hac(hac_root)
    build_decode_cache(clips, make_cfg(hac_root, tmp_path, modalities=["audio"], decode_batch_size=4))
    cfg = make_cfg(hac_root, tmp_path, modalities=["video", "audio"], decode_batch_size=2)

    result = build_decode_cache(clips, cfg)

    assert result.decoded_counts == {"video": 6, "audio": 0}
    rows = rows_by_id(result.path)
    assert sorted(rows) == sorted(clip.clip_id for clip in clips)
    for clip in clips:
        expected = decode_clip(clip, ["video", "audio"], cfg)
        np.testing.assert_array_equal(rows[clip.clip_id]["video"], expected["video"])
        np.testing.assert_array_equal(rows[clip.clip_id]["audio"], expected["audio"])


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_modality_cache_is_decoded_again(hac_root, tmp_path, ray_local, damage):
    clips = [clip for clip in read_hac(hac_root) if clip.domain == "human"]
    cfg = make_cfg(hac_root, tmp_path / "cache", modalities=["video", "audio"])
    first = build_decode_cache(clips, cfg)
    parquet = sorted(first.modalities["audio"].path.glob("*.parquet"))[0]
    if damage == "delete":
        parquet.unlink()
    else:
        parquet.write_bytes(parquet.read_bytes()[:100])

    second = build_decode_cache(clips, cfg)

    assert second.decoded_counts == {"video": 0, "audio": 2}
    assert second.path == first.path
    rows = read_decoded(second.path, domains=["human"]).take_all()
    assert len(rows) == 2
    assert all(row["audio"].shape == cfg.audio.spectrogram_shape for row in rows)


def test_damaged_cache_read_raises_naming_file(hac_root, tmp_path, ray_local):
    clips = [clip for clip in read_hac(hac_root) if clip.domain == "human"]
    cfg = make_cfg(hac_root, tmp_path / "cache", modalities=["video", "audio"])
    result = build_decode_cache(clips, cfg)
    parquet = sorted(result.modalities["audio"].path.glob("*.parquet"))[0]
    parquet.unlink()

    # Ray wraps the DatasetError of the read task in its own task error.
    with pytest.raises(ray.exceptions.RayTaskError) as caught:
        read_decoded(result.path, domains=["human"]).take_all()

    assert parquet.name in str(caught.value)
    assert "build_decode_cache" in str(caught.value)


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
    assert list((tmp_path / "cache").rglob(MARKER_FILE)) == [], "a failed build left a complete cache"
    assert leftover_staging(tmp_path / "cache") == []


def test_failure_keeps_clean_modality_cache(shared_data, tmp_path, ray_local):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = read_hac(root)
    os.unlink(clips[0].audio)
    cache_dir = tmp_path / "cache"

    with pytest.raises(DatasetError, match="1 clip\\(s\\) failed to decode"):
        build_decode_cache(clips, make_cfg(root, cache_dir, modalities=["video", "audio"]))
    video = build_decode_cache(clips, make_cfg(root, cache_dir, modalities=["video"]))

    assert video.decoded_counts == {"video": 0}
    assert video.num_clips == 6
    assert not modality_cache_dir(cache_dir, "audio", modality_key(clips, "audio", make_cfg(root, cache_dir))).exists()


def test_corrupt_clip_skipped_and_quarantined(shared_data, tmp_path, ray_local):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = read_hac(root)
    bad = next(clip for clip in clips if clip.domain == "animal")
    corrupt_video(bad.video, shared_data)
    missing = next(clip for clip in clips if clip.domain == "cartoon" and clip.split == "test")
    os.unlink(missing.video)
    cfg = make_cfg(root, tmp_path / "cache", modalities=["video"], skip_bad_clips=True)

    result = build_decode_cache(clips, cfg)

    assert result.decoded_counts == {"video": 6}
    assert result.num_clips == 4
    assert result.num_skipped == 2
    assert [item["clip_id"] for item in result.skipped] == sorted([bad.clip_id, missing.clip_id])
    assert {item["modality"] for item in result.skipped} == {"video"}
    reasons = {item["clip_id"]: item["reason"] for item in result.skipped}
    assert "undecodable" in reasons[bad.clip_id]
    assert "file not found" in reasons[missing.clip_id]
    assert result.quarantine_csv == result.path / QUARANTINE_FILE
    assert (result.modalities["video"].path / QUARANTINE_FILE).is_file()

    with result.quarantine_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["clip_id", "modality", "split_file", "row", "path", "reason"]
    quarantined = next(row for row in rows if row["clip_id"] == bad.clip_id)
    assert quarantined["path"] == bad.video
    assert quarantined["modality"] == "video"
    assert quarantined["split_file"] == bad.source
    assert quarantined["row"] == str(bad.row)

    remaining = read_decoded(result.path, domains=ALL_DOMAINS).take_all()
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


def test_clip_failing_one_modality_left_out_of_set(shared_data, tmp_path, ray_local):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    clips = read_hac(root)
    silent = clips[0]
    os.unlink(silent.audio)
    cache_dir = tmp_path / "cache"

    both = build_decode_cache(clips, make_cfg(root, cache_dir, modalities=["video", "audio"], skip_bad_clips=True))
    video = build_decode_cache(clips, make_cfg(root, cache_dir, modalities=["video"]))

    assert both.num_clips == 5
    assert both.modalities["video"].num_clips == 6
    assert both.modalities["audio"].num_clips == 5
    assert [(item["clip_id"], item["modality"]) for item in both.skipped] == [(silent.clip_id, "audio")]
    assert silent.clip_id not in rows_by_id(both.path)
    assert video.decoded_counts == {"video": 0}
    assert silent.clip_id in rows_by_id(video.path)


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
    leftover = modality_cache_dir(cfg.cache_dir, "audio", modality_key(clips, "audio", cfg))
    leftover.mkdir(parents=True)
    (leftover / "part-00000.parquet").write_bytes(b"half written")

    result = build_decode_cache(clips, cfg)

    assert result.modalities["audio"].path == leftover
    assert result.decoded_counts == {"audio": 2}
    assert (leftover / MARKER_FILE).is_file()
    assert len(read_decoded(result.path, domains=["animal"]).take_all()) == 2
