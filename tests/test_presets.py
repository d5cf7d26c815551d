"""Every shipped config file parses into a valid job of the main entry point."""

from pathlib import Path

import pytest

from merdg.cli import parse_job
from merdg.config import AudioDecodeConfig, FlowDecodeConfig, VideoDecodeConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses(path):
    job = parse_job(["--config", str(path)], prog="tune_all_domains.py")
    assert job.data.modalities
    assert job.tune.num_trials >= 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_clips_follow_paper_protocol(path):
    job = parse_job(["--config", str(path)], prog="tune_all_domains.py")
    assert job.data.video == VideoDecodeConfig()
    assert job.data.flow == FlowDecodeConfig()
    assert job.data.audio == AudioDecodeConfig()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_uses_paper_backbones(path):
    job = parse_job(["--config", str(path)], prog="tune_all_domains.py")
    assert job.model.encoders == {"video": "slowfast_r101", "audio": "resnet18_audio", "flow": "slowonly_r50_flow"}
    assert sorted(job.model.checkpoints) == ["audio", "flow", "video"]
    assert job.model.trainable_from == "layer4"
