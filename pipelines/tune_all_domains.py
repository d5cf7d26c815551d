"""Search MER-DG's lambda and entropy estimator for every target domain, logged to MLflow.

With no arguments, runs on the embedded benchmark (generated on first use) with local Ray and a
local MLflow store in ./merdg_runs. Every option is a flag (``--train.epochs 3``) or a YAML key
of ``--config FILE``; ``--help`` lists them with their defaults.
"""

from __future__ import annotations

import os

# Keep a local Ray node on 127.0.0.1; this must be set before Ray starts.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import logging
import sys
import time
from pathlib import Path

from merdg.cli import parse_job

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    job = parse_job(argv, prog="tune_all_domains.py", description=__doc__)
    # Imported after parsing so that --help and flag errors do not wait for Ray and MLflow.
    from merdg.config import ConfigError
    from merdg.data.clips import DatasetError
    from merdg.tracking import TrackingError
    from merdg.tuning.job import resolve_paths, run_job
    from merdg.tuning.space import SearchSpaceError

    # A relative space path is looked up in the working directory, then in the repository.
    if not job.tune.space.is_absolute() and not job.tune.space.exists() and (REPO_ROOT / job.tune.space).exists():
        job.tune.space = REPO_ROOT / job.tune.space
    job = resolve_paths(job, Path.cwd())
    started = time.perf_counter()
    try:
        result = run_job(job)
    except (ConfigError, DatasetError, SearchSpaceError, TrackingError) as error:
        # Input errors carry their own file, value and fix; a traceback would only hide them.
        print(f"tune_all_domains.py: error: {error}", file=sys.stderr)
        return 2
    print()
    print(result.markdown)
    print(f"Wall time: {time.perf_counter() - started:.0f} s. MLflow store: {result.tracking_uri} "
          f"(experiment {result.experiment!r}, sweep run {result.sweep_run_id}).")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
