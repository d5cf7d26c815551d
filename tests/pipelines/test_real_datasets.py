"""End-to-end on real EPIC-Kitchens rows: the main job on a frame-layout tree, the Ray Data decode
of a segment-layout tree and of a manifest, with real Ray and real PyAV."""

from __future__ import annotations

import pytest

from merdg.config import DataConfig
from merdg.data.datasets import load_dataset
from merdg.data.manifest import write_manifest
from merdg.data.pipeline import build_decode_cache, read_decoded
from tests.data.epic_tree import build_real_epic_tree
from tests.pipelines.test_tune_all_domains import ONE_TRIAL, TINY_TRAINING, check_mlflow, run_main_job


@pytest.mark.slow
def test_main_job_on_real_epic_frames(tmp_path, shared_data):
    root = build_real_epic_tree(shared_data, tmp_path / "epic", "frames", rows_per_split=3)
    args = [
        "--data.dataset", "epic",
        "--data.root", str(root),
        "--data.cache_dir", str(tmp_path / "cache"),
        "--tune.targets", "[D2]",
        *TINY_TRAINING,
        *ONE_TRIAL,
    ]
    process = run_main_job(args, tmp_path)
    assert "| D2 | D1+D3 |" in process.stdout
    check_mlflow(tmp_path, ["D2"], num_trials=1, epochs=2)


def decoded_ids(cfg: DataConfig, domains: tuple[str, ...]) -> list[str]:
    info = load_dataset(cfg)
    result = build_decode_cache(info.clips, cfg)
    assert result.num_clips == len(info.clips)
    assert result.skipped == []
    dataset = read_decoded(result.path, domains=domains)
    return sorted(row["clip_id"] for row in dataset.select_columns(["clip_id"]).take_all())


def test_ray_decode_of_epic_segments(ray_local, tmp_path, shared_data):
    root = build_real_epic_tree(shared_data, tmp_path / "epic", "segments", rows_per_split=1)
    cfg = DataConfig(dataset="epic", epic_layout="segments", root=root, cache_dir=tmp_path / "cache")
    ids = decoded_ids(cfg, ("D1", "D2", "D3"))
    assert len(ids) == 6
    assert ids[0].startswith("D1/test/")


def test_ray_decode_of_manifest(ray_local, tmp_path, shared_data):
    root = build_real_epic_tree(shared_data, tmp_path / "epic", "frames", rows_per_split=1)
    clips = load_dataset(DataConfig(dataset="epic", root=root)).clips
    manifest = write_manifest(clips, tmp_path / "clips.parquet")
    cfg = DataConfig(dataset="manifest", manifest=manifest, cache_dir=tmp_path / "cache")
    assert decoded_ids(cfg, ("D1", "D2", "D3")) == sorted(clip.clip_id for clip in clips)


@pytest.mark.slow
def test_skipping_every_target_test_clip_is_an_error(tmp_path, shared_data):
    root = build_real_epic_tree(shared_data, tmp_path / "epic", "frames", rows_per_split=1)
    # D2's test list has one clip; removing its RGB frames makes it fail to decode.
    for frame in (root / "rgb" / "test" / "D2").glob("*/frame_*.jpg"):
        frame.unlink()
    args = [
        "--data.dataset", "epic",
        "--data.root", str(root),
        "--data.cache_dir", str(tmp_path / "cache"),
        "--data.skip_bad_clips", "true",
        "--tune.targets", "[D2]",
        *TINY_TRAINING,
    ]
    process = run_main_job(args, tmp_path, expect_success=False)
    assert process.returncode == 2
    assert "after skipping 1 clip(s) that failed to decode" in process.stderr
    assert "target 'D2'" in process.stderr
