"""Configuration: defaults, validation messages that name the flag, YAML and flag parsing."""

import pytest

from merdg.cli import parse_job
from merdg.config import (
    AudioDecodeConfig,
    ConfigError,
    DataConfig,
    FlowDecodeConfig,
    JobConfig,
    TrainConfig,
    VideoDecodeConfig,
)


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
    (lambda: AudioDecodeConfig(noise_amplitude=-0.1), "--data.audio.noise_amplitude"),
    (lambda: AudioDecodeConfig(freq_mask_rows=256), "--data.audio.freq_mask_rows"),
    (lambda: VideoDecodeConfig(crop_size=4), "--data.video.crop_size"),
    (lambda: DataConfig(video=VideoDecodeConfig(frame_size=200)), "--data.video.crop_size"),
    (lambda: DataConfig(flow=FlowDecodeConfig(frame_size=64, crop_size=96)), "--data.flow.crop_size"),
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


def test_clip_classes_default_to_paper_protocol():
    assert VideoDecodeConfig() == VideoDecodeConfig(num_frames=32, frame_stride=2, frame_size=256, crop_size=224)
    assert FlowDecodeConfig() == FlowDecodeConfig(num_frames=8, frame_stride=4, frame_size=256, crop_size=256)
    assert AudioDecodeConfig() == AudioDecodeConfig(
        sample_rate=16000, num_samples=160000, nperseg=512, noverlap=353, noise_amplitude=0.05, freq_mask_rows=9
    )
    assert AudioDecodeConfig().spectrogram_shape == (257, 1004)


def test_job_defaults_keep_benchmark_clip_sizes():
    data = JobConfig().data
    assert data.video == VideoDecodeConfig(num_frames=8, frame_stride=2, frame_size=32, crop_size=28)
    assert data.flow == FlowDecodeConfig(num_frames=8, frame_stride=2, frame_size=32, crop_size=32)
    assert data.audio == AudioDecodeConfig(num_samples=16000, nperseg=256, noverlap=128)
    assert data.audio.spectrogram_shape == (129, 124)


def test_flag_keeps_other_benchmark_clip_defaults(tmp_path):
    from_flag = parse_job(["--data.video.frame_size", "48"], prog="test")
    path = tmp_path / "job.yaml"
    path.write_text("data:\n  video: {frame_size: 48}\n  audio: {nperseg: 128, noverlap: 64}\n")
    from_yaml = parse_job(["--config", str(path)], prog="test")

    for job in (from_flag, from_yaml):
        assert job.data.video == VideoDecodeConfig(num_frames=8, frame_stride=2, frame_size=48, crop_size=28)
        assert job.data.flow == DataConfig().flow
    assert from_flag.data.audio == DataConfig().audio
    assert from_yaml.data.audio == AudioDecodeConfig(num_samples=16000, nperseg=128, noverlap=64)


def test_crop_of_unused_modality_is_not_checked():
    data = DataConfig(modalities=["audio"], video=VideoDecodeConfig(frame_size=200))
    assert data.video.crop_size == 224
