"""Shared fixtures: the real test media, a local Ray instance bound to loopback, and markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep every Ray port on 127.0.0.1: without this, Ray's local node listens on all interfaces.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
# The tests that start Ray here get the settings the main job gives a local instance
# (merdg.tuning.job.init_ray): no preemption watcher, and Ray Train polls its workers every 0.5 s.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "MERDG_SHARED_DATA"


def shared_data_dir() -> Path:
    """Return the folder of real test media: $MERDG_SHARED_DATA, else ../shared/data beside the repo."""
    return Path(os.environ.get(SHARED_DATA_ENV, REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test media (HAC and EPIC split files, clips with audio, stored flow)."""
    root = shared_data_dir()
    if not (root / "HAC_Splits").is_dir():
        pytest.skip(
            f"real test media not found at {root}; set {SHARED_DATA_ENV} to a folder of the public "
            "files that README.md lists under 'Test data', with where to get each one"
        )
    return root


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPUs on loopback, shared by the tests of one module.

    It is shut down after each module, so that the end-to-end tests, which start Ray in a
    subprocess, find no other Ray instance on the machine.
    """
    import ray

    if not ray.is_initialized():
        # Ray's socket paths must stay under 107 bytes, so the temp dir is kept short.
        temp_dir = Path("/tmp") / f"ray-t{os.getpid()}"
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _temp_dir=str(temp_dir),
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()
