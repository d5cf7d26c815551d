"""Tests of the HAC split-file reader and layout reader, on the real split files."""

from __future__ import annotations

from pathlib import Path

import pytest

from merdg.data.clips import DatasetError
from merdg.data.hac import HAC_CLASSES, HAC_DOMAINS, read_hac, read_split_csv
from tests.data.real_tree import build_real_hac_tree

REAL_ROW_COUNTS = {
    ("train", "human"): 1111,
    ("test", "human"): 276,
    ("train", "animal"): 730,
    ("test", "animal"): 176,
    ("train", "cartoon"): 870,
    ("test", "cartoon"): 218,
}


def split_file(shared_data: Path, split: str, domain: str) -> Path:
    return shared_data / "HAC_Splits" / f"HAC_{split}_only_{domain}.csv"


def test_hac_constants():
    assert HAC_DOMAINS == ("human", "animal", "cartoon")
    assert len(HAC_CLASSES) == 7
    assert HAC_CLASSES[1] == "watching TV"
    assert HAC_CLASSES[6] == "opening door"


@pytest.mark.parametrize(("split", "domain"), sorted(REAL_ROW_COUNTS))
def test_read_split_csv_real_files(shared_data, split, domain):
    path = split_file(shared_data, split, domain)
    assert b"\r\n" in path.read_bytes(), "the real split files have CRLF line ends"

    rows = read_split_csv(path, num_classes=7)

    assert len(rows) == REAL_ROW_COUNTS[(split, domain)]
    assert [row for _, _, row in rows] == list(range(1, len(rows) + 1))
    assert {label for _, label, _ in rows} == set(range(7))
    assert all(name.endswith(".mp4") for name, _, _ in rows)
    assert all("\r" not in name for name, _, _ in rows)


def test_read_split_csv_name_with_space(shared_data):
    rows = read_split_csv(split_file(shared_data, "train", "cartoon"), num_classes=7)
    assert ("drinking_54 .mp4", 3, 126) in rows


def test_real_human_lists_overlap(shared_data):
    train = {name: label for name, label, _ in read_split_csv(split_file(shared_data, "train", "human"), 7)}
    test = {name: label for name, label, _ in read_split_csv(split_file(shared_data, "test", "human"), 7)}
    overlap = train.keys() & test.keys()
    assert len(overlap) == 24
    assert all(train[name] == test[name] for name in overlap)


def test_read_split_csv_lf_blank_lines_and_commas(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("a.mp4,0\n\nname, with comma.mp4,6\n  \nlast.mp4, 2\n", encoding="utf-8")

    rows = read_split_csv(path, num_classes=7)

    assert rows == [("a.mp4", 0, 1), ("name, with comma.mp4", 6, 3), ("last.mp4", 2, 5)]


def test_read_split_csv_label_out_of_range(tmp_path):
    path = tmp_path / "HAC_train_only_human.csv"
    path.write_bytes(b"a.mp4,0\r\nb.mp4,6\r\nc.mp4,7\r\n")

    with pytest.raises(DatasetError) as caught:
        read_split_csv(path, num_classes=7)

    message = str(caught.value)
    assert str(path) in message
    assert "row 3" in message
    assert "label 7 is outside [0, 7)" in message


def test_read_split_csv_negative_label(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("a.mp4,-1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"row 1: label -1 is outside \[0, 7\)"):
        read_split_csv(path, num_classes=7)


def test_read_split_csv_non_integer_label(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("a.mp4,0\nb.mp4,drinking\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"row 2: label 'drinking' is not an integer") as caught:
        read_split_csv(path, num_classes=7)
    assert str(path) in str(caught.value)


def test_read_split_csv_malformed_row(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text("a.mp4,0\nno_label_here.mp4\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"row 2: malformed row 'no_label_here.mp4'"):
        read_split_csv(path, num_classes=7)


def test_read_split_csv_empty_name(tmp_path):
    path = tmp_path / "split.csv"
    path.write_text(",3\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="row 1: malformed row"):
        read_split_csv(path, num_classes=7)


def test_read_split_csv_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="split file not found") as caught:
        read_split_csv(tmp_path / "HAC_test_only_animal.csv", num_classes=7)
    assert "HAC_test_only_animal.csv" in str(caught.value)


def test_read_hac_real_tree(shared_data, tmp_path):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=2)

    clips = read_hac(root)

    assert len(clips) == 12
    assert len({clip.clip_id for clip in clips}) == 12
    assert [clip.domain for clip in clips] == ["human"] * 4 + ["animal"] * 4 + ["cartoon"] * 4
    for clip in clips:
        assert clip.split in ("train", "test")
        assert clip.clip_id.startswith(f"{clip.domain}/{clip.split}/")
        for path in (clip.video, clip.audio, clip.flow_x, clip.flow_y):
            assert Path(path).is_absolute()
            assert Path(path).exists(), path
        assert clip.source == str(root / f"HAC_{clip.split}_only_{clip.domain}.csv")
        assert clip.start is None
        assert clip.end is None

    real = {}
    for (split, domain) in REAL_ROW_COUNTS:
        for name, label, _ in read_split_csv(split_file(shared_data, split, domain), 7):
            real[(domain, name)] = label
    for clip in clips:
        assert real[(clip.domain, Path(clip.video).name)] == clip.label


def test_read_hac_layout_paths(shared_data, tmp_path):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=2)

    clips = {clip.clip_id: clip for clip in read_hac(root, domains=["cartoon", "animal"])}

    clip = clips["cartoon/train/drinking_54 "]
    assert clip.label == 3
    assert clip.row == 2
    assert clip.video == str(root / "cartoon" / "videos" / "drinking_54 .mp4")
    assert clip.audio == str(root / "cartoon" / "audio" / "drinking_54 .wav")
    assert clip.flow_x == str(root / "cartoon" / "flow" / "drinking_54 _flow_x.mp4")
    assert clip.flow_y == str(root / "cartoon" / "flow" / "drinking_54 _flow_y.mp4")
    assert {c.domain for c in clips.values()} == {"cartoon", "animal"}


def test_read_hac_clip_in_both_splits(shared_data, tmp_path):
    train = read_split_csv(split_file(shared_data, "train", "human"), 7)
    test = read_split_csv(split_file(shared_data, "test", "human"), 7)
    shared_name = sorted({name for name, _, _ in train} & {name for name, _, _ in test})[0]
    label = next(label for name, label, _ in train if name == shared_name)
    (tmp_path / "human").mkdir()
    for split in ("train", "test"):
        (tmp_path / f"HAC_{split}_only_human.csv").write_bytes(f"{shared_name},{label}\r\n".encode())

    clips = read_hac(tmp_path, domains=["human"])

    assert [clip.clip_id for clip in clips] == [
        f"human/train/{Path(shared_name).stem}",
        f"human/test/{Path(shared_name).stem}",
    ]
    assert clips[0].video == clips[1].video
    assert clips[0].label == clips[1].label == label


def test_read_hac_splits_dir_and_pattern(tmp_path):
    root = tmp_path / "media"
    splits = tmp_path / "lists"
    for domain in ("human", "animal"):
        (root / domain).mkdir(parents=True)
    splits.mkdir()
    (splits / "human-val.csv").write_text("h.mp4,1\n", encoding="utf-8")
    (splits / "animal-val.csv").write_text("a.mp4,5\n", encoding="utf-8")

    clips = read_hac(root, domains=["human", "animal"], splits_dir=splits, split_pattern="{domain}-{split}.csv",
                     splits=("val",))

    assert [(clip.clip_id, clip.label) for clip in clips] == [("human/val/h", 1), ("animal/val/a", 5)]
    assert clips[0].source == str(splits / "human-val.csv")


def test_read_hac_num_classes(tmp_path):
    (tmp_path / "human").mkdir()
    (tmp_path / "HAC_train_only_human.csv").write_text("h.mp4,3\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="label 3 is outside"):
        read_hac(tmp_path, domains=["human"], splits=("train",), num_classes=3)


def test_read_hac_missing_domain_folder(shared_data, tmp_path):
    root = build_real_hac_tree(shared_data, tmp_path / "hac", rows_per_split=1)
    with pytest.raises(DatasetError, match="domain folder not found") as caught:
        read_hac(root, domains=["human", "robot"])
    assert str(root / "robot") in str(caught.value)


def test_read_hac_missing_split_file(tmp_path):
    (tmp_path / "human").mkdir()
    with pytest.raises(DatasetError, match="split file not found") as caught:
        read_hac(tmp_path, domains=["human"])
    assert "HAC_train_only_human.csv" in str(caught.value)


def test_read_hac_missing_media_is_not_checked(tmp_path):
    (tmp_path / "human").mkdir()
    (tmp_path / "HAC_train_only_human.csv").write_text("not_there.mp4,0\n", encoding="utf-8")

    clips = read_hac(tmp_path, domains=["human"], splits=("train",))

    assert len(clips) == 1
    assert not Path(clips[0].video).exists()


def test_read_split_csv_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfclip_a.mp4,2\r\nclip_b.mp4,3\r\n")
    assert read_split_csv(path, 7) == [("clip_a.mp4", 2, 1), ("clip_b.mp4", 3, 2)]


def test_read_split_csv_empty_file_warns(tmp_path, caplog):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert read_split_csv(path, 7) == []
    assert "lists no clips" in caplog.text
