"""EPIC-Kitchens reader: the real MM-SADA split pickles, the restricted unpickler, both layouts."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from merdg.config import DataConfig
from merdg.data.clips import Clip, ClipDecodeError, DatasetError
from merdg.data.datasets import load_dataset
from merdg.data.decoding import decode_clip
from merdg.data.epic import (
    EPIC_CLASSES,
    flow_index,
    load_split_pickle,
    parse_timestamp,
    read_epic,
)
from tests.data.epic_tree import SPLITS_DIR, build_real_epic_tree

# Rows per split file of the published MM-SADA splits.
PUBLISHED_ROWS = {
    ("D1", "train"): 1543, ("D1", "test"): 435,
    ("D2", "train"): 2495, ("D2", "test"): 750,
    ("D3", "train"): 3897, ("D3", "test"): 974,
}


def small_config(root: Path, **kwargs) -> DataConfig:
    return DataConfig(dataset="epic", root=root, **kwargs)


# ----------------------------------------------------------------------------------------------
# Split pickles


def test_real_pickles_row_counts(shared_data):
    clips = read_epic("/nonexistent-root", splits_dir=shared_data / SPLITS_DIR)
    counts = Counter((clip.domain, clip.split) for clip in clips)
    assert counts == PUBLISHED_ROWS


def test_real_pickles_labels_and_ids(shared_data):
    clips = read_epic("/nonexistent-root", splits_dir=shared_data / SPLITS_DIR)
    assert {clip.label for clip in clips} == set(range(len(EPIC_CLASSES)))
    assert len({clip.clip_id for clip in clips}) == len(clips)
    # D3's test list has a single "mix" (6) segment and five "pour" (7) segments.
    d3_test = Counter(clip.label for clip in clips if clip.domain == "D3" and clip.split == "test")
    assert d3_test[6] == 1
    assert d3_test[7] == 5


def test_frame_layout_paths_and_spans(shared_data, tmp_path):
    clips = read_epic(tmp_path, domains=["D3"], splits_dir=shared_data / SPLITS_DIR)
    clip = next(c for c in clips if c.split == "test")
    # The first row of D3_test.pkl: P22_01, frames 70-175, 00:00:01.17 to 00:00:02.92, take.
    assert clip.clip_id == "D3/test/22931"
    assert clip.video == str(tmp_path.resolve() / "rgb/test/D3/P22_01/frame_%010d.jpg")
    assert clip.audio == str(tmp_path.resolve() / "rgb/test/D3/P22_01.wav")
    assert clip.flow_x == str(tmp_path.resolve() / "flow/test/D3/P22_01/u/frame_%010d.jpg")
    assert clip.flow_y == str(tmp_path.resolve() / "flow/test/D3/P22_01/v/frame_%010d.jpg")
    assert clip.frame_span("video") == (70, 175)
    assert clip.frame_span("flow") == (35, 87)
    assert clip.audio_span() == pytest.approx((1.17, 2.92))
    assert clip.label == 0


def test_segment_layout_paths(shared_data, tmp_path):
    clips = read_epic(tmp_path, domains=["D3"], splits_dir=shared_data / SPLITS_DIR, layout="segments")
    clip = next(c for c in clips if c.split == "test")
    root = tmp_path.resolve()
    assert clip.video == str(root / "video/test/D3/D3_P22_01_70_175_0.mp4")
    assert clip.flow_x == str(root / "flow/test/D3/D3_P22_01_70_175_0_u.mp4")
    assert clip.flow_y == str(root / "flow/test/D3/D3_P22_01_70_175_0_v.mp4")
    assert clip.audio == str(root / "audio/test/D3/P22_01.wav")
    assert clip.frame_span("video") is None
    assert (clip.start, clip.end) == (None, None)
    assert clip.audio_span() == pytest.approx((1.17, 2.92))


def test_flow_index_halves_rgb_index():
    assert flow_index(1) == 1
    assert flow_index(2) == 1
    assert flow_index(3) == 1
    assert flow_index(175) == 87
    assert flow_index(176) == 88


def test_parse_timestamp():
    assert parse_timestamp("00:00:01.17") == pytest.approx(1.17)
    assert parse_timestamp("01:02:03.5") == pytest.approx(3723.5)
    with pytest.raises(ValueError, match="HH:MM:SS.ss"):
        parse_timestamp("1.17")


class _RunsCode:
    """An object whose unpickling calls os.system, as a hostile split file would."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_rejects_code(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "D1_train.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(DatasetError, match="rejected unpickling global") as error:
        load_split_pickle(path)
    assert str(path) in str(error.value)
    assert "system" in str(error.value)
    assert not marker.exists()


def test_unpickler_rejects_code_inside_dataframe(tmp_path):
    marker = tmp_path / "code-ran"
    frame = pd.DataFrame({"uid": [1], "payload": [_RunsCode(marker)]})
    path = tmp_path / "D1_test.pkl"
    frame.to_pickle(path)
    with pytest.raises(DatasetError, match="rejected unpickling global"):
        load_split_pickle(path)
    assert not marker.exists()


def test_unpickler_rejects_other_objects(tmp_path):
    path = tmp_path / "D1_train.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetError, match="contains a list, expected a pandas DataFrame"):
        load_split_pickle(path)


def test_unpickler_reports_damaged_file(shared_data, tmp_path):
    path = tmp_path / "D1_train.pkl"
    path.write_bytes((shared_data / SPLITS_DIR / "D1_train.pkl").read_bytes()[:500])
    with pytest.raises(DatasetError, match=f"cannot read split file {path}"):
        load_split_pickle(path)


def test_missing_pickle_names_file(tmp_path):
    with pytest.raises(DatasetError, match="split file not found: .*D2_train.pkl"):
        read_epic(tmp_path, domains=["D2"])


def write_rows(shared_data: Path, folder: Path, change) -> None:
    """Write D1 and D2 split pickles of two real rows each, with ``change`` applied to D1_train."""
    for domain in ("D1", "D2"):
        for split in ("train", "test"):
            frame = load_split_pickle(shared_data / SPLITS_DIR / f"{domain}_{split}.pkl").head(2).copy()
            if (domain, split) == ("D1", "train"):
                change(frame)
            frame.to_pickle(folder / f"{domain}_{split}.pkl")


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("verb_class", 8, r"row 2: verb_class 8 is outside \[0, 8\)"),
        ("verb_class", -1, r"row 2: verb_class -1 is outside \[0, 8\)"),
        ("start_frame", 0, r"row 2: invalid frame span start_frame=0"),
        ("stop_frame", 1, r"row 2: invalid frame span"),
        ("stop_timestamp", "00:00:00.00", r"row 2: stop_timestamp 00:00:00.00 is not after"),
        ("start_timestamp", "4.09", r"row 2: timestamp '4.09' is not in the format HH:MM:SS.ss"),
    ],
)
def test_invalid_row_names_file_and_row(shared_data, tmp_path, column, value, message):
    def change(frame: pd.DataFrame) -> None:
        frame[column] = frame[column].astype(object)
        frame.loc[1, column] = value

    write_rows(shared_data, tmp_path, change)
    with pytest.raises(DatasetError, match=message) as error:
        read_epic(tmp_path, domains=["D1", "D2"])
    assert "D1_train.pkl" in str(error.value)


def test_missing_column_is_reported(shared_data, tmp_path):
    write_rows(shared_data, tmp_path, lambda frame: frame.pop("verb_class"))
    with pytest.raises(DatasetError, match=r"D1_train.pkl: missing column\(s\) \['verb_class'\]"):
        read_epic(tmp_path, domains=["D1", "D2"])


def test_unknown_layout_rejected(tmp_path):
    with pytest.raises(DatasetError, match="invalid --data.epic_layout 'mp4'"):
        read_epic(tmp_path, layout="mp4")


def test_dataset_requires_root():
    with pytest.raises(DatasetError, match="--data.root is required for --data.dataset epic"):
        load_dataset(DataConfig(dataset="epic"))


# ----------------------------------------------------------------------------------------------
# Decoding real trees


@pytest.fixture(scope="module")
def frames_tree(shared_data, tmp_path_factory):
    return build_real_epic_tree(shared_data, tmp_path_factory.mktemp("epic-frames"), "frames")


@pytest.fixture(scope="module")
def segments_tree(shared_data, tmp_path_factory):
    return build_real_epic_tree(shared_data, tmp_path_factory.mktemp("epic-segments"), "segments")


def test_frame_tree_decodes_every_clip(frames_tree):
    cfg = small_config(frames_tree)
    info = load_dataset(cfg)
    assert info.domains == ("D1", "D2", "D3")
    assert info.class_names == EPIC_CLASSES
    assert len(info.clips) == 12
    for clip in info.clips:
        decoded = decode_clip(clip, cfg.modalities, cfg)
        assert decoded["video"].shape == (cfg.video.num_frames, cfg.video.frame_size, cfg.video.frame_size, 3)
        assert decoded["flow"].shape == (cfg.flow.num_frames, cfg.flow.frame_size, cfg.flow.frame_size, 2)
        assert decoded["audio"].shape == cfg.audio.spectrogram_shape
        assert np.isfinite(decoded["audio"]).all()


def test_frame_tree_samples_the_span(frames_tree, shared_data):
    # With stride 1 and as many frames as the span holds, every image of the span is decoded in
    # order, so the frames follow the real images the tree links in turn.
    cfg = small_config(frames_tree)
    clip = next(c for c in load_dataset(cfg).clips if c.frame_span("video")[1] - c.frame_span("video")[0] >= 20)
    first = clip.frame_span("video")[0]
    cfg.video.num_frames, cfg.video.frame_stride = 20, 1
    video = decode_clip(clip, ["video"], cfg)["video"]
    start = (first - 1 + (clip.frame_span("video")[1] - first + 1 - 20) // 2) % 10
    expected_images = [(start + k) % 10 for k in range(20)]
    distinct = {}
    for k, image in enumerate(expected_images):
        distinct.setdefault(image, video[k])
        np.testing.assert_array_equal(video[k], distinct[image])
    assert len({frame.tobytes() for frame in video}) == 10


def test_missing_frame_names_file(frames_tree, tmp_path):
    cfg = small_config(frames_tree)
    clip = load_dataset(cfg).clips[0]
    first, last = clip.frame_span("video")
    shortened = Clip(**{**clip.to_row(), "video_stop_frame": last + 500})
    with pytest.raises(ClipDecodeError, match="missing frame") as error:
        decode_clip(shortened, ["video"], cfg)
    assert error.value.path.startswith(str(Path(clip.video).parent))


def test_missing_flow_frames_named(frames_tree):
    cfg = small_config(frames_tree)
    clip = load_dataset(cfg).clips[0]
    first, last = clip.frame_span("flow")
    beyond = Clip(**{**clip.to_row(), "flow_stop_frame": last + 1000})
    with pytest.raises(ClipDecodeError, match="missing frame") as error:
        decode_clip(beyond, ["flow"], cfg)
    assert "/u/frame_" in error.value.path


def test_segment_tree_decodes_every_clip(segments_tree):
    cfg = small_config(segments_tree, epic_layout="segments")
    info = load_dataset(cfg)
    assert len(info.clips) == 12
    for clip in info.clips:
        decoded = decode_clip(clip, cfg.modalities, cfg)
        assert decoded["video"].shape[0] == cfg.video.num_frames
        assert decoded["flow"].shape[-1] == 2
        assert decoded["audio"].shape == cfg.audio.spectrogram_shape


def test_audio_cut_by_timestamps(frames_tree):
    # Two rows of the same video with different spans give different spectrograms of the same wav.
    cfg = small_config(frames_tree)
    clips = [c for c in load_dataset(cfg).clips if c.domain == "D1" and c.split == "train"]
    assert clips[0].audio == clips[1].audio
    assert clips[0].audio_span() != clips[1].audio_span()
    first = decode_clip(clips[0], ["audio"], cfg)["audio"]
    second = decode_clip(clips[1], ["audio"], cfg)["audio"]
    assert not np.allclose(first, second)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 5])
def test_every_pickle_protocol_loads(shared_data, tmp_path, protocol):
    frame = load_split_pickle(shared_data / SPLITS_DIR / "D1_test.pkl").head(5)
    path = tmp_path / "D1_test.pkl"
    path.write_bytes(pickle.dumps(frame, protocol=protocol))
    assert load_split_pickle(path).equals(frame)


def test_damaged_dataframe_state_rejected(shared_data, tmp_path):
    frame = load_split_pickle(shared_data / SPLITS_DIR / "D1_test.pkl").head(2)
    frame.__dict__["_mgr"] = 5  # what a pickle that sets the attribute rebuilds
    write_rows(shared_data, tmp_path, lambda _: None)
    (tmp_path / "D1_train.pkl").write_bytes(pickle.dumps(frame))
    with pytest.raises(DatasetError, match="D1_train.pkl: invalid split file: the DataFrame in it is damaged"):
        read_epic(tmp_path, domains=["D1", "D2"])


def test_duplicate_uid_rejected(shared_data, tmp_path):
    def duplicate(frame: pd.DataFrame) -> None:
        frame.loc[1, "uid"] = frame.loc[0, "uid"]

    write_rows(shared_data, tmp_path, duplicate)
    with pytest.raises(DatasetError, match=r"D1_train.pkl, row 2: duplicate uid .* \(first at row 1\)"):
        read_epic(tmp_path, domains=["D1", "D2"])
