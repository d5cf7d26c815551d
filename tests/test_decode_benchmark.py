"""Tests of benchmarks/decode.py: the generated frame layout, the clip spans, ffmpeg output
parsing, the requirement checks and one tiny run of the whole script."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

from merdg.data.epic import flow_index

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "decode.py"

pytestmark = [
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH (apt-get install -y ffmpeg)"),
    pytest.mark.skipif(importlib.util.find_spec("PIL") is None, reason='Pillow not installed (pip install -e ".[bench]")'),
]


@pytest.fixture(scope="module")
def bench():
    """The benchmark script, imported as a module."""
    spec = importlib.util.spec_from_file_location("decode_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def frame_layout(bench, shared_data, tmp_path_factory):
    """Frame folders of the first 9 frames of each media file."""
    return bench.build_frame_layout(shared_data, tmp_path_factory.mktemp("frames"), max_frames=9)


def test_frame_layout_files(bench, frame_layout):
    from PIL import Image

    assert [folder.name for folder in frame_layout] == ["bigbuckbunny", "box", "cup", "demo"]
    for folder in frame_layout:
        assert folder.num_rgb == 9
        assert folder.num_flow == 4
        assert sorted(path.name for path in folder.rgb.iterdir())[0] == "frame_0000000001.jpg"
        assert len(list(folder.rgb.iterdir())) == 9
        assert len(list(folder.flow_u.iterdir())) == 4
        assert len(list(folder.flow_v.iterdir())) == 4
        with Image.open(folder.rgb / "frame_0000000009.jpg") as image:
            assert image.size == (456, 256)
            assert image.mode == "RGB"
        with Image.open(folder.flow_u / "frame_0000000004.jpg") as image:
            assert image.size == (456, 256)
            assert image.mode == "L"


def test_spread_clips_spans(bench, frame_layout):
    clips = bench.spread_clips(frame_layout, num_clips=6, span_frames=5)

    assert [clip.folder.name for clip in clips] == ["bigbuckbunny", "bigbuckbunny", "box", "box", "cup", "demo"]
    for clip in clips:
        assert clip.rgb_count == 5
        assert 1 <= clip.rgb_first
        assert clip.rgb_last <= clip.folder.num_rgb
        assert clip.flow_first == flow_index(clip.rgb_first)
        assert clip.flow_last == min(flow_index(clip.rgb_last), clip.folder.num_flow)
    assert (clips[0].rgb_first, clips[1].rgb_first) == (1, 5)


def test_spread_clips_short_video(bench, frame_layout):
    clips = bench.spread_clips(frame_layout[:1], num_clips=2, span_frames=95)

    assert [(clip.rgb_first, clip.rgb_last) for clip in clips] == [(1, 9), (1, 9)]
    assert [(clip.flow_first, clip.flow_last) for clip in clips] == [(1, 4), (1, 4)]


def test_parse_ffmpeg_benchmark(bench):
    stderr = (
        "frame=   40 fps=0.0 q=-0.0 size=N/A time=00:00:01.60 bitrate=N/A speed=N/A\n"
        "frame=   95 fps=0.0 q=-0.0 Lsize=N/A time=00:00:03.80 bitrate=N/A speed=83.1x\n"
        "bench: utime=0.041s stime=0.003s rtime=0.049s\n"
        "bench: maxrss=54484kB\n"
    )

    result = bench.parse_ffmpeg_benchmark(stderr)

    assert result.cpu_seconds == pytest.approx(0.044)
    assert result.real_seconds == 0.049
    assert result.frames == 95


def test_parse_ffmpeg_benchmark_without_bench_line(bench):
    with pytest.raises(bench.BenchmarkError, match="no -benchmark line"):
        bench.parse_ffmpeg_benchmark("frame=   95 fps=0.0\n")


def test_missing_ffmpeg_names_install_command(bench, shared_data, monkeypatch):
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)

    with pytest.raises(bench.BenchmarkError, match=re.escape("apt-get install -y ffmpeg")):
        bench.check_requirements(shared_data)


def test_missing_pillow_names_extra(bench, shared_data, monkeypatch):
    monkeypatch.setattr(bench, "Image", None)

    with pytest.raises(bench.BenchmarkError, match=re.escape('pip install -e ".[bench]"')):
        bench.check_requirements(shared_data)


def test_resize_crop_filter(bench):
    assert bench.resize_crop_filter(1280, 720, 256, "rgb24") == "scale=455:256:flags=bilinear,crop=256:256,format=rgb24"
    assert bench.resize_crop_filter(240, 320, 64, "gray") == "scale=64:85:flags=bilinear,crop=64:64,format=gray"


def test_script_tiny_run(bench, shared_data, tmp_path, capsys):
    bench.main([
        "--media-dir", str(shared_data), "--work-dir", str(tmp_path),
        "--clips", "2", "--span-frames", "12", "--max-source-frames", "12", "--repeats", "1",
        "--video-frames", "4", "--flow-frames", "2", "--flow-stride", "2", "--size", "64",
        "--skip-ray", "--skip-mp4",
    ])
    output = capsys.readouterr().out

    rows = [line for line in output.splitlines() if line.startswith("| ") and not line.startswith("| loader")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| merdg decode_clip, 2 processes",
        "| FFmpeg, decode loop",
        "| FFmpeg, whole processes",
        "| FFmpeg, decode loop, sampled images only (derived)",
        "| FFmpeg + resize, crop, RGB/gray, decode loop",
        "| FFmpeg + resize, crop, RGB/gray, decode loop, sampled images only (derived)",
        "| PIL per-frame loader, DataLoader, 2 workers",
    ]
    images_per_clip = [int(row.split(" | ")[1]) for row in rows]
    assert images_per_clip == [8, 24, 24, 8, 24, 8, 8]
    # The per-clip ratio of merdg to itself, a check that the table's columns line up.
    assert rows[0].split(" | ")[7] == "1.00"
    differences = [float(value) for value in re.findall(r"mean absolute difference ([\d.]+) levels", output)]
    assert len(differences) == 4
    assert max(differences) < 3.0
