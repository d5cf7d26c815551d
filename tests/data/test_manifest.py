"""Generic manifest reader: CSV and Parquet clip tables, validation, and decoding real media through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from merdg.config import DataConfig
from merdg.data.clips import DatasetError
from merdg.data.datasets import load_dataset
from merdg.data.decoding import decode_clip
from merdg.data.epic import read_epic
from merdg.data.manifest import read_manifest, write_manifest
from tests.data.epic_tree import SPLITS_DIR

HEADER = "clip_id,domain,split,label,video,audio,flow_x,flow_y,start,end,video_start_frame,video_stop_frame\n"


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def media(shared_data, tmp_path) -> Path:
    """A folder with links to real media under relative names."""
    folder = tmp_path / "media"
    folder.mkdir()
    imgs = shared_data / "mmaction2-test-data" / "imgs"
    for index in range(1, 11):
        (folder / f"img_{index:05d}.jpg").symlink_to(imgs / f"img_{index:05d}.jpg")
    for index in range(1, 6):
        for axis in ("x", "y"):
            (folder / f"{axis}_{index:05d}.jpg").symlink_to(imgs / f"{axis}_{index:05d}.jpg")
    (folder / "box.mp4").symlink_to(shared_data / "opencv-doc-media" / "box.mp4")
    (folder / "cup.mp4").symlink_to(shared_data / "opencv-doc-media" / "cup.mp4")
    (folder / "test.wav").symlink_to(shared_data / "mmaction2-test-data" / "test.wav")
    return folder


def test_csv_relative_paths_resolved(media):
    manifest = write_csv(media / "clips.csv", [
        "a1,kitchen,train,0,box.mp4,box.mp4,,,1.0,3.5,,",
        "a2,kitchen,test,1,img_%05d.jpg,test.wav,x_%05d.jpg,y_%05d.jpg,,,2,9",
    ])
    clips = read_manifest(manifest)
    assert [clip.clip_id for clip in clips] == ["a1", "a2"]
    assert clips[0].video == str(media.resolve() / "box.mp4")
    assert (clips[0].start, clips[0].end) == (1.0, 3.5)
    assert clips[0].flow_x is None
    assert clips[1].frame_span("video") == (2, 9)
    assert clips[1].frame_span("flow") is None
    assert (clips[1].source, clips[1].row) == (str(manifest.resolve()), 2)


def test_manifest_clips_decode(media):
    # Video files are cut by seconds, image sequences by frame spans (flow: 5 images on disk).
    header = HEADER.rstrip("\n") + ",flow_start_frame,flow_stop_frame\n"
    manifest = write_csv(media / "clips.csv", [
        "a1,kitchen,train,0,box.mp4,box.mp4,x_%05d.jpg,y_%05d.jpg,1.0,3.5,,,1,5",
        "a2,kitchen,test,1,img_%05d.jpg,test.wav,x_%05d.jpg,y_%05d.jpg,,,2,9,1,4",
        "b1,garage,train,1,cup.mp4,cup.mp4,x_%05d.jpg,y_%05d.jpg,,,,,,",
        "b2,garage,test,0,img_%05d.jpg,test.wav,x_%05d.jpg,y_%05d.jpg,0.5,2.0,1,10,2,5",
    ], header=header)
    cfg = DataConfig(dataset="manifest", manifest=manifest)
    info = load_dataset(cfg)
    assert info.domains == ("kitchen", "garage")
    assert info.class_names == ("0", "1")
    for clip in info.clips:
        decoded = decode_clip(clip, cfg.modalities, cfg)
        assert decoded["video"].shape == (cfg.video.num_frames, cfg.video.frame_size, cfg.video.frame_size, 3)
        assert decoded["flow"].shape[-1] == 2
        assert np.isfinite(decoded["audio"]).all()


def test_parquet_round_trip_of_epic_clips(shared_data, tmp_path):
    clips = read_epic(tmp_path / "epic", domains=["D1", "D2"], splits_dir=shared_data / SPLITS_DIR)
    path = write_manifest(clips, tmp_path / "epic.parquet")
    assert read_manifest(path) == [
        type(clip)(**{**clip.to_row(), "source": str(path.resolve()), "row": row})
        for row, clip in enumerate(clips, start=1)
    ]


def test_csv_round_trip_keeps_spans(shared_data, tmp_path):
    clips = read_epic(tmp_path / "epic", domains=["D3"], splits_dir=shared_data / SPLITS_DIR)[:20]
    path = write_manifest(clips, tmp_path / "epic.csv")
    back = read_manifest(path)
    assert [(c.clip_id, c.label, c.video, c.frame_span("flow"), c.audio_span()) for c in back] == [
        (c.clip_id, c.label, c.video, c.frame_span("flow"), c.audio_span()) for c in clips
    ]


def test_extra_columns_ignored(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["x,d,train,0,v.mp4,,,,,,,,take the cup"],
                     header=HEADER.rstrip("\n") + ",narration\n")
    assert read_manifest(path)[0].clip_id == "x"


def test_numeric_ids_stay_text(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["007,1,train,0,v.mp4,,,,,,,"])
    clip = read_manifest(path)[0]
    assert clip.clip_id == "007"
    assert clip.domain == "1"


@pytest.mark.parametrize(
    "row, message",
    [
        ("a,d,val,0,v.mp4,,,,,,,", r"row 1: split 'val' is not one of \['train', 'test'\]"),
        ("a,d,train,-1,v.mp4,,,,,,,", r"row 1: label '-1' is not an integer >= 0"),
        ("a,d,train,1.5,v.mp4,,,,,,,", r"row 1: label '1.5' is not an integer >= 0"),
        ("a,d,train,cat,v.mp4,,,,,,,", r"row 1: label 'cat' is not an integer >= 0"),
        (",d,train,0,v.mp4,,,,,,,", r"row 1: empty clip_id"),
        ("a,,train,0,v.mp4,,,,,,,", r"row 1: empty domain"),
        ("a,d,train,0,v.mp4,,,,,,5,", r"row 1: .*video frame span needs both ends"),
        ("a,d,train,0,v.mp4,,,,,,9,5", r"row 1: .*invalid video frame span \[9, 5\]"),
        ("a,d,train,0,v.mp4,,,,soon,,,", r"row 1: start 'soon' is not a number"),
        ("a,d,train,0,v.mp4,,,,inf,,,", r"row 1: start '?inf'? is not a finite number"),
        ("a,d,train,0,v.mp4,,,,nan,,,", r"row 1: start '?nan'? is not a finite number"),
        ("a,d,train,0,v.mp4,,,,-1,2,,", r"row 1: .*invalid start -1.0"),
        ("a,d,train,0,v.mp4,,,,3,2,,", r"row 1: .*invalid span: end 2.0 is not after start 3.0"),
        ("a,d,train,0,v.mp4,,,,2,2,,", r"row 1: .*invalid span: end 2.0 is not after start 2.0"),
    ],
)
def test_invalid_row_names_file_and_row(tmp_path, row, message):
    path = write_csv(tmp_path / "m.csv", [row])
    with pytest.raises(DatasetError, match=message) as error:
        read_manifest(path)
    assert str(path.resolve()) in str(error.value)


def test_duplicate_clip_id_rejected(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["a,d,train,0,v.mp4,,,,,,,", "a,e,test,1,w.mp4,,,,,,,"])
    with pytest.raises(DatasetError, match=r"row 2: duplicate clip_id 'a' \(first at row 1\)"):
        read_manifest(path)


def test_missing_required_column(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["a,d,train,v.mp4"], header="clip_id,domain,split,video\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['label'\]"):
        read_manifest(path)


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    other = tmp_path / "m.json"
    other.write_text("{}")
    with pytest.raises(DatasetError, match="unknown extension '.json'"):
        read_manifest(other)


def test_label_beyond_class_names(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["a,d,train,0,v.mp4,,,,,,,", "b,e,train,3,v.mp4,,,,,,,"])
    cfg = DataConfig(dataset="manifest", manifest=path, class_names=["walk", "run"])
    with pytest.raises(DatasetError, match=r"row 2: label 3 is outside \[0, 2\)"):
        load_dataset(cfg)


def test_unknown_domain_rejected(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["a,d,train,0,v.mp4,,,,,,,", "b,e,train,1,v.mp4,,,,,,,"])
    cfg = DataConfig(dataset="manifest", manifest=path, domains=["d", "f"])
    with pytest.raises(DatasetError, match=r"\['f'\] not in the dataset"):
        load_dataset(cfg)


def test_manifest_requires_path():
    with pytest.raises(DatasetError, match="--data.manifest is required"):
        load_dataset(DataConfig(dataset="manifest"))


def test_rows_counted_without_blank_lines(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "a,d,train,0,v.mp4,,,,,,,\n\n\nb,d,test,x,v.mp4,,,,,,,\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"row 2: label 'x'"):
        read_manifest(path)


def test_huge_label_needs_class_names(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["a,d,train,0,v.mp4,,,,,,,", "b,e,train,1000000000,v.mp4,,,,,,,"])
    with pytest.raises(DatasetError, match=r"row 2: label 1000000000 would make 1000000001 classes"):
        load_dataset(DataConfig(dataset="manifest", manifest=path))
