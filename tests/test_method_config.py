"""Host-method, optimizer and balanced-batch settings: defaults, flags, YAML, and errors naming the flag."""

import pytest

from merdg.cli import parse_job
from merdg.config import CMCConfig, CMRFConfig, ConfigError, MethodsConfig, SimMMDGConfig, TrainConfig


def test_defaults_are_the_published_values():
    assert SimMMDGConfig() == SimMMDGConfig(contrast_weight=3.0, temperature=0.1, distance_weight=0.7,
                                            translation_weight=0.1, translation_hidden=256)
    assert CMCConfig() == CMCConfig(contrast_weight=1.0, temperature=0.07)
    assert CMRFConfig() == CMRFConfig(distill_weight=3.0, unimodal_weight=2.0, contrast_weight=3.0, temperature=0.1,
                                      mixup_alpha=0.1, teacher_average="simple", ema_momentum=0.999, start_step=400,
                                      modality_weights={"audio": 0.5})
    train = TrainConfig()
    assert (train.optimizer, train.balanced_batches) == ("adam", True)
    assert (train.lars_momentum, train.lars_eta, train.lars_exclude_bias_and_norm) == (0.9, 0.001, True)


@pytest.mark.parametrize(("build", "flag"), [
    (lambda: SimMMDGConfig(temperature=0.0), "--methods.simmmdg.temperature"),
    (lambda: SimMMDGConfig(distance_weight=-1.0), "--methods.simmmdg.distance_weight"),
    (lambda: SimMMDGConfig(translation_hidden=0), "--methods.simmmdg.translation_hidden"),
    (lambda: CMCConfig(contrast_weight=-0.5), "--methods.cmc.contrast_weight"),
    (lambda: CMCConfig(temperature=-1.0), "--methods.cmc.temperature"),
    (lambda: CMRFConfig(ema_momentum=1.0), "--methods.cmrf.ema_momentum"),
    (lambda: CMRFConfig(teacher_average="median"), "--methods.cmrf.teacher_average"),
    (lambda: CMRFConfig(start_step=-1), "--methods.cmrf.start_step"),
    (lambda: CMRFConfig(mixup_alpha=0.0), "--methods.cmrf.mixup_alpha"),
    (lambda: CMRFConfig(modality_weights={"smell": 1.0}), "--methods.cmrf.modality_weights"),
    (lambda: CMRFConfig(modality_weights={"audio": -1.0}), "--methods.cmrf.modality_weights"),
    (lambda: TrainConfig(optimizer="sgd"), "--train.optimizer"),
    (lambda: TrainConfig(lars_momentum=1.5), "--train.lars_momentum"),
    (lambda: TrainConfig(lars_eta=0.0), "--train.lars_eta"),
])
def test_invalid_setting_names_its_flag(build, flag):
    with pytest.raises(ConfigError, match=flag.replace(".", r"\.")):
        build()


def test_flags_and_yaml_set_method_settings(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  method: cmrf\n  optimizer: lars\nmethods:\n  cmrf:\n    start_step: 0\n")
    job = parse_job(["--config", str(path), "--methods.cmrf.teacher_average", "exponential",
                     "--methods.simmmdg.temperature", "0.2", "--train.balanced_batches", "false"], prog="test")
    assert job.train.method == "cmrf"
    assert job.train.optimizer == "lars"
    assert job.train.balanced_batches is False
    assert job.methods.cmrf.start_step == 0
    assert job.methods.cmrf.teacher_average == "exponential"
    assert job.methods.simmmdg.temperature == 0.2
    assert isinstance(job.methods, MethodsConfig)


def test_invalid_method_flag_exits_with_its_name(capsys):
    with pytest.raises(SystemExit):
        parse_job(["--methods.cmc.temperature", "0"], prog="test")
    assert "--methods.cmc.temperature" in capsys.readouterr().err


def test_method_settings_change_the_fingerprint():
    default = parse_job([], prog="test").fingerprint()
    changed = parse_job(["--methods.cmrf.start_step", "10"], prog="test").fingerprint()
    assert changed != default
