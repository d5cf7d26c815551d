"""pipelines/make_manifest.py: convert a dataset's clip table once, then read it back as a manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from merdg.config import DataConfig
from merdg.data.datasets import load_dataset
from tests.data.epic_tree import SPLITS_DIR

SCRIPT = Path(__file__).resolve().parents[1] / "pipelines" / "make_manifest.py"


def test_epic_splits_to_manifest(tmp_path, shared_data):
    root = tmp_path / "epic"
    root.mkdir()
    out = tmp_path / "epic.csv"
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--data.dataset", "epic", "--data.root", str(root),
         "--data.splits_dir", str(shared_data / SPLITS_DIR), "--data.domains", "[D1, D3]", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert "wrote 6849 clips of epic" in process.stdout

    names = json.loads(process.stdout.split("--data.class_names '")[1].rstrip("'\n"))
    original = load_dataset(DataConfig(dataset="epic", root=root, splits_dir=shared_data / SPLITS_DIR,
                                       domains=["D1", "D3"]))
    converted = load_dataset(DataConfig(dataset="manifest", manifest=out, class_names=names))
    assert converted.domains == ("D1", "D3")
    assert converted.class_names == original.class_names
    assert [(c.clip_id, c.label, c.video, c.frame_span("video"), c.audio_span()) for c in converted.clips] == [
        (c.clip_id, c.label, c.video, c.frame_span("video"), c.audio_span()) for c in original.clips
    ]


def test_bad_dataset_root_exits_2(tmp_path):
    process = subprocess.run(
        [sys.executable, str(SCRIPT), "--data.dataset", "epic", "--data.root", str(tmp_path / "none"),
         "--out", str(tmp_path / "m.csv")],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 2
    assert f"EPIC-Kitchens root not found: {tmp_path / 'none'}" in process.stderr
