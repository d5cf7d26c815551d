"""Checks the main job makes before any work: names, folders, split coverage, resources."""

from pathlib import Path

import pytest

from merdg.config import ConfigError, DataConfig, JobConfig, MERConfig, TrainConfig
from merdg.data.clips import Clip, DatasetError
from merdg.data.datasets import DatasetInfo
from merdg.training.trainer import WorkerResources, check_feasible
from merdg.tuning.job import check_splits, make_folder, validate_job
from merdg.tuning.sweep import leave_one_out


def clips_for(counts: dict[tuple[str, str], int]) -> list[Clip]:
    return [Clip(f"{domain}/{split}/{i}", domain, split, 0) for (domain, split), n in counts.items() for i in range(n)]


def info_with(counts: dict[tuple[str, str], int]) -> DatasetInfo:
    return DatasetInfo("unit", Path("/data"), ("a", "b", "c"), ("x", "y"), clips_for(counts))


def test_empty_validation_set_is_named():
    info = info_with({("a", "train"): 2, ("b", "train"): 2, ("c", "train"): 2, ("c", "test"): 1})
    with pytest.raises(DatasetError, match="validation \\(source test lists\\) of target 'c'"):
        check_splits(info, leave_one_out(info.domains, ["c"]))


def test_empty_target_is_named():
    info = info_with({("a", "train"): 2, ("a", "test"): 1, ("b", "train"): 2, ("b", "test"): 1})
    with pytest.raises(DatasetError, match="target 'c'"):
        check_splits(info, leave_one_out(info.domains, ["c"]))


def test_empty_target_test_list_is_named():
    info = info_with({(d, s): 1 for d in "ab" for s in ("train", "test")} | {("c", "train"): 3})
    with pytest.raises(DatasetError, match="target 'c' \\(its test list\\)"):
        check_splits(info, leave_one_out(info.domains, ["c"]))


def test_complete_splits_pass():
    info = info_with({(d, s): 1 for d in "abc" for s in ("train", "test")})
    check_splits(info, leave_one_out(info.domains, None))


def test_duplicate_and_unknown_targets_raise():
    with pytest.raises(ConfigError, match="twice"):
        leave_one_out(["a", "b"], ["a", "a"])
    with pytest.raises(ConfigError, match="not among"):
        leave_one_out(["a", "b"], ["mars"])


def test_duplicate_domains_raise():
    with pytest.raises(ConfigError, match="--data.domains"):
        DataConfig(domains=["human", "human"])


def test_output_folder_under_a_file_names_the_flag(tmp_path):
    blocker = tmp_path / "plainfile"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="--output_dir: cannot create the folder"):
        make_folder(blocker / "runs", "output_dir")


@pytest.mark.parametrize(("job", "flag"), [
    (JobConfig(train=TrainConfig(method="simclr")), "--train.method"),
    (JobConfig(mer=MERConfig(estimator="shannon")), "--mer.estimator"),
    (JobConfig(mer=MERConfig(estimator="koleo", estimator_params={"bogus": 1.0})), "--mer.estimator_params"),
    (JobConfig(mer=MERConfig(estimator="koleo", estimator_params={"eps": -1.0})), "--mer.estimator_params"),
])
def test_invalid_names_and_parameters_raise(job, flag):
    with pytest.raises(ConfigError, match=flag.replace(".", r"\.")):
        validate_job(job)


def test_gpu_workers_on_a_cpu_machine_raise():
    job = JobConfig(train=TrainConfig(use_gpu=True))
    resources = WorkerResources(cpus_per_worker=1.0, gpus_per_worker=1.0)
    with pytest.raises(ConfigError, match="2 GPUs for --train.use_gpu"):
        check_feasible(job, resources, {"CPU": 2.0}, fixed=True)


def test_oversized_cpu_workers(caplog):
    job = JobConfig(train=TrainConfig(cpus_per_worker=4.0))
    resources = WorkerResources(cpus_per_worker=4.0, gpus_per_worker=0.0)
    with pytest.raises(ConfigError, match="--train.cpus_per_worker"):
        check_feasible(job, resources, {"CPU": 2.0}, fixed=True)
    check_feasible(job, resources, {"CPU": 2.0}, fixed=False)
    assert "autoscaler" in caplog.text


def test_fitting_workers_pass():
    job = JobConfig()
    check_feasible(job, WorkerResources(cpus_per_worker=0.5, gpus_per_worker=0.0), {"CPU": 2.0}, fixed=True)


def test_refused_ray_address_raises():
    from merdg.tuning.job import check_ray_address

    with pytest.raises(ConfigError, match="--ray_address: no Ray cluster responds at 127.0.0.1:1"):
        check_ray_address("127.0.0.1:1")
    check_ray_address("auto")


def test_method_needing_two_modalities_raises():
    job = JobConfig(data=DataConfig(modalities=["audio"]), train=TrainConfig(method="simmmdg"))
    with pytest.raises(ConfigError, match="--data.modalities"):
        validate_job(job)
