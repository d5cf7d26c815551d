"""A cache folder that cannot be written: no permission, a read-only file system, a full disk.

Each must stop the decode stage or the benchmark generation with a ``CacheWriteError`` that
names the cache folder and the flag to change, and leave no partial cache behind.

The read-only and full-disk cases mount a real tmpfs in a new user and mount namespace
(``unshare --user --map-root-user --mount``, which needs no privileges where the kernel allows
unprivileged user namespaces): one mounted read-only (EROFS), one too small for the decoded
arrays (ENOSPC). They run in a subprocess and skip where user namespaces are not available.
The permission case (EACCES) uses chmod, so it skips where the process ignores permission bits
(root with CAP_DAC_OVERRIDE).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from merdg.config import BenchmarkConfig, DataConfig
from merdg.data import pipeline
from merdg.data.benchmark import ensure_benchmark
from merdg.data.cache_sets import MARKER_FILE
from merdg.data.clips import CacheWriteError, Clip
from merdg.data.hac import read_hac
from merdg.data.pipeline import build_decode_cache, decode_parts
from tests.conftest import REPO_ROOT
from tests.data.real_tree import build_real_hac_tree

SMALL_BENCHMARK = BenchmarkConfig(num_classes=3, clips_per_class=2, num_frames=8, frame_size=32, fps=8)

# Runs one action against a cache folder and prints its outcome as JSON: the exception type and
# message (if any), the folder a CacheWriteError names, the number of clips decoded and the
# entries left in the cache folder. The entries are listed here because a tmpfs mounted in the
# namespace is gone once the namespace exits.
NAMESPACE_SCRIPT = textwrap.dedent('''
    import json, os, shutil, sys
    from pathlib import Path

    from merdg.config import BenchmarkConfig, DataConfig
    from merdg.data.datasets import load_dataset
    from merdg.data.hac import read_hac
    from merdg.data.pipeline import build_decode_cache

    args = json.loads(sys.argv[1])
    outcome = {"error": None, "message": "", "folder": None, "num_decoded": None, "entries": []}
    ray_dir = None
    try:
        if args["action"] == "benchmark":
            benchmark = BenchmarkConfig(**args["benchmark"])
            load_dataset(DataConfig(dataset="benchmark", cache_dir=args["cache_dir"], benchmark=benchmark))
        else:
            if args.get("start_ray"):
                import ray
                # Short, because Ray's socket paths must stay under 107 bytes.
                ray_dir = f"/tmp/ray-ns{os.getpid()}"
                ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_dir, log_to_driver=False,
                         configure_logging=False)
            cfg = DataConfig(dataset="hac", root=args["root"], cache_dir=args["cache_dir"],
                             modalities=args["modalities"], decode_batch_size=2)
            outcome["num_decoded"] = build_decode_cache(read_hac(args["root"]), cfg).num_decoded
    except Exception as exc:
        outcome.update(error=type(exc).__name__, message=str(exc), folder=getattr(exc, "folder", None))
    if ray_dir is not None:
        import ray
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    cache_dir = Path(args["cache_dir"])
    outcome["entries"] = sorted(str(path.relative_to(cache_dir)) for path in cache_dir.rglob("*"))
    print("OUTCOME " + json.dumps(outcome))
''')


def user_namespaces_available() -> str | None:
    """Return why a user and mount namespace with a tmpfs cannot be made here, or None when it can."""
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"user and mount namespaces are not available: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def namespaces() -> None:
    reason = user_namespaces_available()
    if reason is not None:
        pytest.skip(f"{reason}; the read-only and full-disk cache tests mount a tmpfs in one")


def run_in_namespace(tmp_path: Path, shell: str, args: dict) -> dict:
    """Run ``shell`` (mount commands) in a new user and mount namespace, then the action ``args``; return its outcome."""
    script = tmp_path / "action.py"
    script.write_text(NAMESPACE_SCRIPT, encoding="utf-8")
    command = f"{shell} && exec {sys.executable} {script} '{json.dumps(args)}'"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    # The timeout only stops a hung run, so that the test fails instead of waiting forever.
    process = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", command],
                             capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in process.stdout.splitlines() if line.startswith("OUTCOME ")]
    assert lines, f"the action printed no outcome (exit status {process.returncode}):\n{process.stderr[-3000:]}"
    return json.loads(lines[-1][len("OUTCOME "):])


@pytest.fixture(scope="module")
def hac_root(shared_data, tmp_path_factory) -> Path:
    return build_real_hac_tree(shared_data, tmp_path_factory.mktemp("hac"), rows_per_split=1)


def cache_entries(cache_dir: Path) -> list[str]:
    return sorted(str(path.relative_to(cache_dir)) for path in cache_dir.rglob("*"))


# ----------------------------------------------------------------------------------------------
# A read-only file system


def test_read_only_cache_raises_before_decoding(namespaces, hac_root, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()

    outcome = run_in_namespace(tmp_path, f"mount -t tmpfs -o ro,size=1m tmpfs {cache_dir}",
                               {"action": "decode", "root": str(hac_root), "cache_dir": str(cache_dir),
                                "modalities": ["video", "audio"]})

    assert outcome["error"] == "CacheWriteError"
    assert outcome["folder"] == str(cache_dir)
    assert f"cannot write to the cache folder {cache_dir}: Read-only file system" in outcome["message"]
    assert "--data.cache_dir" in outcome["message"]


def test_read_only_benchmark_cache_raises(namespaces, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()

    outcome = run_in_namespace(tmp_path, f"mount -t tmpfs -o ro,size=1m tmpfs {cache_dir}",
                               {"action": "benchmark", "cache_dir": str(cache_dir),
                                "benchmark": SMALL_BENCHMARK.__dict__})

    assert outcome["error"] == "CacheWriteError"
    assert outcome["folder"] == str(cache_dir)
    assert "Read-only file system" in outcome["message"]
    assert "--data.cache_dir" in outcome["message"]


def test_complete_cache_on_read_only_mount_is_reused(namespaces, hac_root, tmp_path):
    cache_dir = tmp_path / "cache"
    built = subprocess.run(
        [sys.executable, "-c", NAMESPACE_SCRIPT,
         json.dumps({"action": "decode", "root": str(hac_root), "cache_dir": str(cache_dir),
                     "modalities": ["audio"], "start_ray": True})],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    assert '"num_decoded": 6' in built.stdout, built.stderr[-3000:]
    before = cache_entries(cache_dir)

    outcome = run_in_namespace(tmp_path, f"mount --bind {cache_dir} {cache_dir} && "
                                         f"mount -o remount,bind,ro {cache_dir}",
                               {"action": "decode", "root": str(hac_root), "cache_dir": str(cache_dir),
                                "modalities": ["audio"]})

    assert outcome["error"] is None, outcome["message"]
    assert outcome["num_decoded"] == 0
    assert cache_entries(cache_dir) == before


# ----------------------------------------------------------------------------------------------
# A full disk


@pytest.mark.timeout(900)
def test_full_disk_during_decode_raises(namespaces, hac_root, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()

    # 16 KiB holds the cache folders but not one Parquet part of two decoded video clips.
    outcome = run_in_namespace(tmp_path, f"mount -t tmpfs -o size=16k tmpfs {cache_dir}",
                               {"action": "decode", "root": str(hac_root), "cache_dir": str(cache_dir),
                                "modalities": ["video"], "start_ray": True})

    assert outcome["error"] == "CacheWriteError"
    assert outcome["folder"] == str(cache_dir)
    assert f"cannot write to the cache folder {cache_dir}" in outcome["message"]
    assert "No space left on device" in outcome["message"]
    assert ".parquet failed" in outcome["message"]
    assert [entry for entry in outcome["entries"] if ".incomplete-" in entry] == []
    assert [entry for entry in outcome["entries"] if entry.endswith((".parquet", MARKER_FILE))] == []


def test_full_disk_during_benchmark_generation_raises(namespaces, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()

    outcome = run_in_namespace(tmp_path, f"mount -t tmpfs -o size=64k tmpfs {cache_dir}",
                               {"action": "benchmark", "cache_dir": str(cache_dir),
                                "benchmark": SMALL_BENCHMARK.__dict__})

    assert outcome["error"] == "CacheWriteError"
    assert outcome["folder"] == str(cache_dir)
    assert "No space left on device" in outcome["message"]
    assert "writing the benchmark failed" in outcome["message"]
    assert outcome["entries"] == []


def test_full_disk_at_part_write_is_reported(shared_data, tmp_path, monkeypatch):
    """The decode task returns a failed write in its status row, and the driver raises from it."""
    clip = Clip(clip_id="a", domain="d", split="train", label=0,
                audio=str(shared_data / "mmaction2-test-data" / "test.wav"))
    staging = tmp_path / "staging"
    staging.mkdir()

    def disk_full(folder, part, modality, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / f"part-{part:05d}.parquet"))

    monkeypatch.setattr(pipeline, "_write_part", disk_full)
    status = decode_parts({"part": [0], "clips": [json.dumps([clip.to_row()])]},
                          staging={"audio": str(staging)}, cfg=DataConfig(modalities=["audio"]))

    assert list(status["clip_ids"]) == ["[]"]
    assert "No space left on device" in status["write_error"][0]
    assert str(staging / "part-00000.parquet") in status["write_error"][0]
    rows = [{name: status[name][0] for name in status}]
    with pytest.raises(CacheWriteError) as caught:
        pipeline._check_part_writes({"audio": rows}, tmp_path / "cache")
    assert caught.value.folder == str(tmp_path / "cache")
    assert "No space left on device" in str(caught.value)


# ----------------------------------------------------------------------------------------------
# No permission


def ignores_permission_bits(folder: Path) -> bool:
    """Return whether this process can create a file in a folder without write permission (root can)."""
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return False
    finally:
        folder.chmod(0o755)
    return True


def test_cache_without_write_permission_raises(hac_root, tmp_path):
    if ignores_permission_bits(tmp_path / "probe"):
        pytest.skip("this process ignores permission bits (root with CAP_DAC_OVERRIDE); the read-only mount tests "
                    "cover the failed writes")
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cache_dir.chmod(0o555)
    try:
        with pytest.raises(CacheWriteError) as decode_error:
            build_decode_cache(read_hac(hac_root), DataConfig(dataset="hac", root=hac_root, cache_dir=cache_dir))
        with pytest.raises(CacheWriteError) as benchmark_error:
            ensure_benchmark(SMALL_BENCHMARK, cache_dir)
    finally:
        cache_dir.chmod(0o755)

    for caught in (decode_error, benchmark_error):
        assert caught.value.folder == str(cache_dir)
        assert "Permission denied" in str(caught.value)
        assert "--data.cache_dir" in str(caught.value)
    assert list(cache_dir.rglob(MARKER_FILE)) == []
