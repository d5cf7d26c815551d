"""The MLflow adapter: the only module that writes to MLflow.

Runs are addressed by id through ``MlflowClient``, never through MLflow's global active run, so
that nested runs and Ray Tune's own MLflow callback can write to the same store side by side.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


def default_tracking_uri(output_dir: Path) -> str:
    """Return the local SQLite store in ``output_dir``."""
    return f"sqlite:///{(Path(output_dir) / 'mlflow.db').resolve()}"


def check_reachable(tracking_uri: str, timeout_s: float = 10.0) -> None:
    """Fail fast when an HTTP tracking server does not respond.

    MLflow's own client retries a refused connection with exponential backoff for minutes; this
    probe of the server's ``/health`` endpoint fails within ``timeout_s`` instead. An HTTP error
    status (authentication, for example) counts as reachable and is left to MLflow to report.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            pass
    except urllib.error.HTTPError as error:
        if error.code < 500:
            return
        raise TrackingError(
            f"the MLflow tracking server {tracking_uri!r} responded with HTTP {error.code} ({error.reason}) at {url}; "
            "check the server's log, or omit --tracking.tracking_uri to use a local SQLite store."
        ) from error
    except (urllib.error.URLError, OSError) as error:
        raise TrackingError(
            f"cannot reach the MLflow tracking server {tracking_uri!r}: {getattr(error, 'reason', error)}. "
            "Start it (for example `mlflow server --host 127.0.0.1 --port 5000`) or omit "
            "--tracking.tracking_uri to use a local SQLite store."
        ) from error


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into 'a.b.c' keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """Creates runs in one MLflow experiment and logs params, metrics, tags and artifacts to them.

    Args:
        tracking_uri: an MLflow tracking URI (``sqlite:///...``, ``http://127.0.0.1:5000``, ...).
        experiment: the experiment name; created when missing.
        artifact_location: where a newly created experiment stores artifacts (a local folder is
            turned into a file URI); ignored when the experiment exists.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: Path | None = None):
        self.tracking_uri = tracking_uri
        if not experiment:
            raise TrackingError("the MLflow experiment name is empty; set --tracking.experiment to a name")
        check_reachable(tracking_uri)
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = Path(artifact_location).resolve().as_uri() if artifact_location else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                self.experiment_id = found.experiment_id
        except Exception as error:  # MLflow raises several unrelated types for an unreachable store.
            raise TrackingError(
                f"cannot use the MLflow tracking store {tracking_uri!r}: {error}. Check that the server "
                "is running and reachable and that the URI is one MLflow accepts (sqlite:///, http://, "
                "https://), or omit --tracking.tracking_uri to use a local SQLite store."
            ) from error
        self.experiment = experiment

    def start_run(self, name: str, *, parent_run_id: str | None = None, tags: Mapping[str, str] | None = None) -> str:
        """Create a run (nested under ``parent_run_id`` when given) and return its id."""
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log flattened params; values longer than MLflow's limit are cut and marked."""
        flat = flatten(params)
        entries = []
        for key, value in flat.items():
            text = str(value)
            if len(text) > MAX_PARAM_LENGTH:
                text = text[: MAX_PARAM_LENGTH - 3] + "..."
            entries.append(Param(key, text))
        for start in range(0, len(entries), 100):
            self.client.log_batch(run_id, params=entries[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step``."""
        timestamp = mlflow.utils.time.get_current_time_millis()
        entries = [Metric(key, float(value), timestamp, step or 0) for key, value in metrics.items()]
        for start in range(0, len(entries), 500):
            self.client.log_batch(run_id, metrics=entries[start : start + 500])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set string tags on a run."""
        self.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Store ``text`` as an artifact file of the run."""
        self.client.log_text(run_id, text, artifact_file)

    def log_dict(self, run_id: str, values: Mapping[str, Any], artifact_file: str) -> None:
        """Store a mapping as a YAML or JSON artifact (by the file's extension)."""
        self.client.log_dict(run_id, dict(values), artifact_file)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts."""
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)
