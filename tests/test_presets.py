"""Every shipped config file parses into a valid job of the main entry point."""

from pathlib import Path

import pytest

from merdg.cli import parse_job
from merdg.config import AudioDecodeConfig, FlowDecodeConfig, VideoDecodeConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
"""The dataset configs; the paper presets in configs/paper/ are layered on them."""


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


PAPER_PRESETS = sorted(path for path in (Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*.yaml")
                       if path.name != "official_code_optimisation.yaml")
"""The paper's run presets; official_code_optimisation.yaml is an overlay for any of them."""
REPO = Path(__file__).resolve().parents[1]

# (protocol, modality set, host) cells of the paper's tables (REFERENCE: multi-source V+A with
# every host, V+F and A+F with Fusion, V+A+F with Fusion, SimMMDG and CMRF; single-source V+A+F
# with Fusion, SimMMDG and CMRF).
PAPER_ROWS = {
    *((("multi_source", ("video", "audio"), host)) for host in ("fusion", "cmc", "simmmdg", "cmrf")),
    ("multi_source", ("video", "flow"), "fusion"),
    ("multi_source", ("audio", "flow"), "fusion"),
    *((("multi_source", ("video", "audio", "flow"), host)) for host in ("fusion", "simmmdg", "cmrf")),
    *((("single_source", ("video", "audio", "flow"), host)) for host in ("fusion", "simmmdg", "cmrf")),
}


def layered(dataset: str, preset: Path, *more: str) -> list[str]:
    return ["--config", str(REPO / "configs" / f"{dataset}.yaml"), "--config", str(preset), *more]


@pytest.mark.parametrize("dataset", ["hac", "epic"])
@pytest.mark.parametrize("preset", PAPER_PRESETS, ids=lambda p: p.name)
def test_paper_preset_layers_on_each_dataset(dataset, preset):
    from merdg.tuning.space import load_space
    from merdg.tuning.sweep import plan_cells

    job = parse_job(layered(dataset, preset), prog="tune_all_domains.py")
    # The dataset config's data, backbones and cluster survive the preset layered on top.
    assert job.data.dataset == dataset
    assert job.model.encoders["video"] == "slowfast_r101"
    assert job.train.use_gpu
    assert job.tune.baseline and len(job.tune.seeds) >= 3
    space = load_space(REPO / job.tune.space)
    assert list(space.estimators) == ["logdet"]
    domains = ["human", "animal", "cartoon"] if dataset == "hac" else ["D1", "D2", "D3"]
    cells = plan_cells(job, domains)
    assert cells
    assert all(job.train.batch_size // job.train.num_workers % len(c.sources) == 0 for c in cells)


def test_paper_presets_cover_every_paper_row():
    covered = set()
    for preset in PAPER_PRESETS:
        if preset.name == "full_grid.yaml":
            continue
        job = parse_job(layered("hac", preset), prog="tune_all_domains.py")
        for protocol in job.tune.protocols:
            covered |= {(protocol, tuple(m), host) for m in job.modality_sets for host in job.host_methods}
    assert covered == PAPER_ROWS
    full = parse_job(layered("hac", REPO / "configs" / "paper" / "full_grid.yaml"), prog="tune_all_domains.py")
    grid = {(p, tuple(m), h) for p in full.tune.protocols for m in full.modality_sets for h in full.host_methods}
    assert PAPER_ROWS <= grid


def test_paper_presets_use_the_paper_optimisation():
    job = parse_job(layered("hac", REPO / "configs" / "paper" / "multi_source_va.yaml"), prog="tune_all_domains.py")
    assert (job.train.optimizer, job.train.lr, job.train.batch_size, job.train.epochs) == ("adam", 1e-4, 48, 25)
    assert (job.mer.weight, job.mer.estimator) == (3.0, "logdet")
    code = parse_job(layered("hac", REPO / "configs" / "paper" / "multi_source_va.yaml", "--config",
                             str(REPO / "configs" / "paper" / "official_code_optimisation.yaml")),
                     prog="tune_all_domains.py")
    assert (code.train.batch_size, code.train.epochs) == (16, 20)
    assert code.tune.methods == ["fusion", "cmc", "simmmdg", "cmrf"]
