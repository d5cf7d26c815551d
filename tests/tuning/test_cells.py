"""What a sweep covers: its cells per protocol, target, modality set and host, and their identities."""

from __future__ import annotations

import pytest

from merdg.config import ConfigError, DataConfig, JobConfig, TuneConfig
from merdg.tuning.sweep import plan_cells, single_source

DOMAINS = ["a", "b", "c"]


def test_default_is_one_multi_source_cell_per_target():
    cells = plan_cells(JobConfig(), DOMAINS)
    assert [(c.target, c.sources) for c in cells] == [("a", ("b", "c")), ("b", ("a", "c")), ("c", ("a", "b"))]
    assert {c.modalities for c in cells} == {("video", "audio", "flow")}
    assert {c.method for c in cells} == {"fusion"}


def test_grid_of_protocols_modality_sets_and_hosts():
    job = JobConfig(tune=TuneConfig(protocols=["multi_source", "single_source"], targets=["c"],
                                    modality_sets=[["audio", "video"], ["video", "audio", "flow"]],
                                    methods=["fusion", "cmc"]))
    cells = plan_cells(job, DOMAINS)
    # multi-source: 1 pair; single-source: 2 pairs; each x 2 modality sets x 2 hosts.
    assert len(cells) == (1 + 2) * 2 * 2
    assert {c.modalities for c in cells} == {("video", "audio"), ("video", "audio", "flow")}
    assert sorted({c.sources for c in cells if c.protocol == "single_source"}) == [("a",), ("b",)]
    assert len({c.identity("sweep") for c in cells}) == len(cells)


def test_cell_job_sets_modalities_and_method_only():
    job = JobConfig()
    cell = plan_cells(JobConfig(tune=TuneConfig(methods=["cmc"], modality_sets=[["video", "audio"]])), DOMAINS)[0]
    derived = cell.job(job)
    assert (derived.data.modalities, derived.train.method) == (["video", "audio"], "cmc")
    assert job.data.modalities == ["video", "audio", "flow"]
    assert derived.train.epochs == job.train.epochs


def test_single_source_pairs():
    assert single_source(DOMAINS, ["a"]) == [("a", ("b",)), ("a", ("c",))]


def test_identity_depends_on_the_sweep_and_the_cell():
    first, second = plan_cells(JobConfig(), DOMAINS)[:2]
    assert first.identity("s1") != first.identity("s2")
    assert first.identity("s1") != second.identity("s1")
    assert first.identity("s1") == plan_cells(JobConfig(), DOMAINS)[0].identity("s1")


def test_fingerprint_ignores_resume_but_not_seeds():
    base = JobConfig()
    assert base.fingerprint() == JobConfig(tune=TuneConfig(resume=False)).fingerprint()
    assert base.fingerprint() != JobConfig(tune=TuneConfig(seeds=[0, 1])).fingerprint()


@pytest.mark.parametrize("kwargs, message", [
    ({"protocols": ["cross_source"]}, "unknown protocol"),
    ({"protocols": []}, "tune.protocols: empty"),
    ({"seeds": []}, "tune.seeds: empty"),
    ({"seeds": [1, 1]}, "lists a seed twice"),
    ({"modality_sets": [["video", "smell"]]}, "tune.modality_sets"),
    ({"modality_sets": [["video", "audio"], ["audio", "video"]]}, "lists a set twice"),
    ({"methods": ["fusion", "fusion"]}, "lists a method twice"),
    ({"selection": "best"}, "unknown selection method"),
    ({"selection": "lodo", "protocols": ["single_source"]}, "lodo needs two or more source domains"),
])
def test_invalid_sweep_settings_name_the_flag(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TuneConfig(**kwargs)


def test_modality_set_must_be_decoded():
    with pytest.raises(ConfigError, match="does not decode"):
        JobConfig(data=DataConfig(modalities=["video", "audio"]), tune=TuneConfig(modality_sets=[["flow"]]))


def test_lodo_with_two_domains_raises():
    with pytest.raises(ConfigError, match="lodo"):
        plan_cells(JobConfig(tune=TuneConfig(selection="lodo")), ["a", "b"])
