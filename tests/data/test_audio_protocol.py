"""The decoded spectrogram against scipy, on a real 10 s wav at the MER-DG audio settings."""

from __future__ import annotations

import wave

import numpy as np
import scipy.signal

from merdg.config import AudioDecodeConfig
from merdg.data.decoding import decode_audio, log_spectrogram

WAV = "vggsound-example-audio/FwVYUHKoLtQ_000034.wav"  # PCM s16, 16 kHz mono, 160029 samples


def read_pcm16_wav(path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM mono wav with the standard library, scaled to [-1, 1) as int16 / 32768."""
    with wave.open(str(path)) as reader:
        assert reader.getsampwidth() == 2
        assert reader.getnchannels() == 1
        rate = reader.getframerate()
        frames = reader.readframes(reader.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0, rate


def scipy_log_spectrogram(samples: np.ndarray, rate: int) -> np.ndarray:
    """The MER-DG audio recipe with its numbers written in: first 160000 samples, clip, spectrogram, log, z-score."""
    samples = np.clip(samples[:160000], -1.0, 1.0)
    _, _, power = scipy.signal.spectrogram(samples, rate, nperseg=512, noverlap=353)
    log_power = np.log(power + 1e-7)
    return (log_power - log_power.mean()) / (log_power.std() + 1e-9)


def test_defaults_are_paper_audio_settings():
    cfg = AudioDecodeConfig()
    assert (cfg.sample_rate, cfg.num_samples, cfg.nperseg, cfg.noverlap) == (16000, 160000, 512, 353)
    assert cfg.spectrogram_shape == (257, 1004)


def test_decode_audio_matches_scipy(shared_data):
    samples, rate = read_pcm16_wav(shared_data / WAV)
    reference = scipy_log_spectrogram(samples, rate)

    decoded = decode_audio(shared_data / WAV, AudioDecodeConfig())

    assert rate == 16000
    assert samples.size >= 160000
    assert reference.shape == (257, 1004)
    assert decoded.shape == (257, 1004)
    np.testing.assert_allclose(decoded, reference, rtol=1e-5, atol=0)


def test_log_spectrogram_matches_scipy(shared_data):
    samples, rate = read_pcm16_wav(shared_data / WAV)

    computed = log_spectrogram(samples, AudioDecodeConfig(), str(shared_data / WAV))

    assert computed.shape == (257, 1004)
    np.testing.assert_allclose(computed, scipy_log_spectrogram(samples, rate), rtol=1e-5, atol=0)
