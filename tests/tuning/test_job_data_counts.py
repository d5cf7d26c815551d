"""The job's decode cache counts in MLflow, on a real local SQLite store."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from merdg.data.datasets import DatasetInfo
from merdg.data.pipeline import DecodeCacheResult, ModalityCache
from merdg.tracking import Tracker, default_tracking_uri
from merdg.tuning.job import _log_data, format_counts


def audio_changed_result(cache_dir: Path) -> DecodeCacheResult:
    """A cache of 300 clips after a change of audio settings: audio decoded, video reused, one clip skipped."""
    skipped = [{"clip_id": "human/train/a", "modality": "audio", "path": "/data/a.wav", "reason": "file not found"}]
    return DecodeCacheResult(
        path=cache_dir / "decoded" / "sets" / "abc",
        num_clips=299,
        modalities={
            "video": ModalityCache("video", "v1", cache_dir / "decoded" / "video" / "v1", num_clips=300,
                                   num_decoded=0, num_reused=300),
            "audio": ModalityCache("audio", "a2", cache_dir / "decoded" / "audio" / "a2", num_clips=299,
                                   num_decoded=300, num_reused=0, skipped=skipped),
        },
        skipped=skipped,
    )


def test_log_data_counts_per_modality(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "unit", artifact_location=tmp_path / "artifacts")
    run_id = tracker.start_run("sweep")
    info = DatasetInfo("benchmark", tmp_path / "root", ("human", "animal"), ("a", "b"), [])

    _log_data(tracker, run_id, info, audio_changed_result(tmp_path))

    run = MlflowClient(default_tracking_uri(tmp_path)).get_run(run_id)
    metrics = run.data.metrics
    assert metrics["data_clips"] == 299
    assert metrics["data_decoded_clips"] == 300
    assert metrics["data_skipped_clips"] == 1
    assert metrics["data_decoded_clips_video"] == 0
    assert metrics["data_reused_clips_video"] == 300
    assert metrics["data_decoded_clips_audio"] == 300
    assert metrics["data_reused_clips_audio"] == 0
    assert run.data.params["decode_cache"] == str(tmp_path / "decoded" / "sets" / "abc")
    assert run.data.params["decode_cache_audio"] == str(tmp_path / "decoded" / "audio" / "a2")


def test_format_counts():
    result = audio_changed_result(Path("/cache"))

    assert format_counts(result.decoded_counts) == "video 0, audio 300"
    assert format_counts(result.reused_counts) == "video 300, audio 0"
