"""Every shipped config file parses into a valid job of the main entry point."""

from pathlib import Path

import pytest

from merdg.cli import parse_job

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses(path):
    job = parse_job(["--config", str(path)], prog="tune_all_domains.py")
    assert job.data.modalities
    assert job.tune.num_trials >= 1
