"""Configuration: defaults, validation messages that name the flag, YAML and flag parsing."""

import pytest

from merdg.cli import parse_job
from merdg.config import AudioDecodeConfig, ConfigError, DataConfig, JobConfig, TrainConfig


def test_defaults_are_valid_and_fingerprint_is_stable():
    assert JobConfig().fingerprint() == JobConfig().fingerprint()
    assert JobConfig(train=TrainConfig(epochs=2)).fingerprint() != JobConfig().fingerprint()


def test_modalities_are_put_in_canonical_order():
    assert DataConfig(modalities=["flow", "video"]).modalities == ["video", "flow"]


@pytest.mark.parametrize(("build", "flag"), [
    (lambda: DataConfig(modalities=[]), "--data.modalities"),
    (lambda: DataConfig(modalities=["video", "smell"]), "--data.modalities"),
    (lambda: DataConfig(modalities=["video", "video"]), "--data.modalities"),
    (lambda: DataConfig(domains=["human"]), "--data.domains"),
    (lambda: AudioDecodeConfig(nperseg=256, noverlap=256), "--data.audio.noverlap"),
    (lambda: TrainConfig(batch_size=1, num_workers=2), "--train.batch_size"),
    (lambda: TrainConfig(epochs=0), "--train.epochs"),
])
def test_invalid_values_name_their_flag(build, flag):
    with pytest.raises(ConfigError, match=flag.replace(".", r"\.")):
        build()


def test_audio_spectrogram_shape_matches_scipy_convention():
    assert AudioDecodeConfig(num_samples=160000, nperseg=512, noverlap=353).spectrogram_shape == (257, 1004)


def test_flags_and_yaml_file_combine(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("train:\n  epochs: 3\ndata:\n  modalities: [audio, video]\n")
    job = parse_job(["--config", str(path), "--train.lr", "0.01"], prog="test")
    assert job.train.epochs == 3
    assert job.train.lr == 0.01
    assert job.data.modalities == ["video", "audio"]


def test_invalid_flag_value_exits_with_its_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_job(["--train.num_workers", "0"], prog="test")
    assert exit_info.value.code == 2
    assert "--train.num_workers" in capsys.readouterr().err


def test_group_that_is_not_a_mapping_exits(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text("train: 5\n")
    with pytest.raises(SystemExit):
        parse_job(["--config", str(path)], prog="test")
    assert "error" in capsys.readouterr().err
