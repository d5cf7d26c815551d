"""The MLflow adapter: the only module that writes to MLflow.

Runs are addressed by id through ``MlflowClient``, never through MLflow's global active run, so
that nested runs and Ray Tune's own MLflow callback can write to the same store side by side.

An HTTP tracking server that cannot be reached when a ``Tracker`` opens is an error, before any
work starts. One that goes down later does not stop the job: each write that the server does not
take is appended to a JSON lines file (``Tracker.unlogged_path``), and ``Tracker.report_unlogged``
names that file and the number of writes kept in it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000

UNLOGGED_FILE = "mlflow_unlogged.jsonl"
"""Default name of the JSON lines file of writes that an unreachable tracking server did not take."""

UNLOGGED_RUN_PREFIX = "unlogged-"
"""Prefix of the run ids that ``Tracker.start_run`` returns while the tracking server is unreachable."""

PROBE_TIMEOUT_S = 5.0
"""Seconds each write to an HTTP tracking server waits for its /health endpoint."""

CONNECTION_ERRORS = (
    ConnectionError,
    TimeoutError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
)
"""Errors of a refused, reset or timed-out connection, or of a server that returned HTTP 5xx until the retries ran out."""

_Result = TypeVar("_Result")


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


def is_connection_error(error: BaseException) -> bool:
    """Return whether ``error``, or an error it was raised from or while handling, is one of ``CONNECTION_ERRORS``.

    MLflow's REST client raises ``MlflowException`` after its own retries, with the failed
    connection as that exception's cause or context.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, CONNECTION_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


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
        unlogged_path: the JSON lines file for writes that an HTTP tracking server does not take
            while it is down; default: ``UNLOGGED_FILE`` in the working directory. It is created
            at the first such write, and ``num_unlogged`` counts the writes this tracker kept in it.

    Raises:
        TrackingError: the store cannot be reached or used when the tracker opens.

    Every write to an HTTP tracking server first probes the server's /health endpoint (for at
    most ``PROBE_TIMEOUT_S``), because MLflow's client retries a refused connection for minutes.
    When the probe fails, or the write fails on a connection error, the write is appended to
    ``unlogged_path`` and the caller goes on. Other errors are raised, and so is every error of a
    local store (``sqlite:///``).
    NOTE: the reads (``find_run``, ``fail_running_children``, ``load_json``) are not guarded, so
    during an outage they wait for MLflow's retries and raise. ``reachable`` lets a caller check first.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: Path | None = None, *,
                 unlogged_path: Path | None = None):
        self.tracking_uri = tracking_uri
        self.unlogged_path = Path(unlogged_path if unlogged_path is not None else UNLOGGED_FILE).resolve()
        self.num_unlogged = 0
        # Writers holding a copy of this tracker (a Tune callback restored from its experiment's
        # state) append to the same file, so the final report counts the file's lines past this offset.
        self._unlogged_offset = self.unlogged_path.stat().st_size if self.unlogged_path.exists() else 0
        self._remote = tracking_uri.startswith(("http://", "https://"))
        self._unreachable_since: str | None = None
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

    def reachable(self) -> bool:
        """Return whether the tracking store is reachable now.

        An HTTP server must pass the /health probe. A local store counts as reachable.
        """
        if not self._remote:
            return True
        try:
            check_reachable(self.tracking_uri, timeout_s=PROBE_TIMEOUT_S)
        except TrackingError:
            return False
        return True

    def report_unlogged(self) -> int:
        """Log a warning with the count and file of the writes kept since the tracker opened; return the count.

        The count includes writes kept by copies of this tracker, because they append to the same file.
        """
        count = 0
        if self.unlogged_path.exists():
            with self.unlogged_path.open("rb") as file:
                file.seek(self._unlogged_offset)
                count = sum(1 for line in file if line.strip())
        if count:
            logger.warning(
                "%d MLflow write(s) to %s (experiment %r) were not logged because the tracking server was "
                "unreachable; they are in %s, one JSON object per line",
                count, self.tracking_uri, self.experiment, self.unlogged_path,
            )
        return count

    def _write(self, kind: str, run_id: str, data: Mapping[str, Any], call: Callable[[], _Result]) -> _Result | None:
        """Run one MLflow write and return its result, or keep the write in the unlogged file and return None.

        A write is kept when its run exists only in the unlogged file, or when an HTTP tracking
        server fails the /health probe or fails the write on a connection error. Other errors are raised.
        """
        # start_run passes the id that a run created offline would get, so that run does not exist yet.
        if kind != "start_run" and run_id.startswith(UNLOGGED_RUN_PREFIX):
            self._keep(kind, run_id, data, "the run exists only in the unlogged file")
            return None
        if not self._remote:
            return call()
        try:
            check_reachable(self.tracking_uri, timeout_s=PROBE_TIMEOUT_S)
            result = call()
        except TrackingError as error:
            self._keep(kind, run_id, data, str(error))
            return None
        except Exception as error:
            if not is_connection_error(error):
                raise
            self._keep(kind, run_id, data, f"{type(error).__name__}: {error}")
            return None
        if self._unreachable_since is not None:
            logger.warning("the MLflow tracking server %s is reachable again; %d write(s) since %s are in %s",
                           self.tracking_uri, self.num_unlogged, self._unreachable_since, self.unlogged_path)
            self._unreachable_since = None
        return result

    def _keep(self, kind: str, run_id: str, data: Mapping[str, Any], reason: str) -> None:
        """Append one write that MLflow did not take to the unlogged file."""
        record = {
            "time": datetime.now(timezone.utc).isoformat(),
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "kind": kind,
            "run_id": run_id,
            "reason": reason,
            "data": dict(data),
        }
        self.unlogged_path.parent.mkdir(parents=True, exist_ok=True)
        with self.unlogged_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record, default=str) + "\n")
        self.num_unlogged += 1
        if self._unreachable_since is None:
            self._unreachable_since = record["time"]
            logger.warning("cannot write to the MLflow tracking server %s (%s); the job goes on, and writes are "
                           "kept in %s until the server is reachable again", self.tracking_uri, reason,
                           self.unlogged_path)
        else:
            logger.debug("kept %s of run %s in %s (%d so far)", kind, run_id, self.unlogged_path, self.num_unlogged)

    def start_run(self, name: str, *, parent_run_id: str | None = None, tags: Mapping[str, str] | None = None) -> str:
        """Create a run (nested under ``parent_run_id`` when given) and return its id.

        While the tracking server is unreachable, and under a parent created then, the run exists
        only in the unlogged file, with an id that starts with ``UNLOGGED_RUN_PREFIX``.
        """
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        local_run_id = f"{UNLOGGED_RUN_PREFIX}{uuid.uuid4().hex}"
        data = {"name": name, "tags": all_tags}
        if parent_run_id and parent_run_id.startswith(UNLOGGED_RUN_PREFIX):
            self._keep("start_run", local_run_id, data, "the parent run exists only in the unlogged file")
            return local_run_id
        run = self._write("start_run", local_run_id, data,
                          lambda: self.client.create_run(self.experiment_id, run_name=name, tags=all_tags))
        return run.info.run_id if run is not None else local_run_id

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
            batch = entries[start : start + 100]
            self._write("log_params", run_id, {"params": {param.key: param.value for param in batch}},
                        lambda batch=batch: self.client.log_batch(run_id, params=batch))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics at ``step``."""
        timestamp = mlflow.utils.time.get_current_time_millis()
        entries = [Metric(key, float(value), timestamp, step or 0) for key, value in metrics.items()]
        for start in range(0, len(entries), 500):
            batch = entries[start : start + 500]
            data = {"step": step or 0, "timestamp_ms": timestamp,
                    "metrics": {metric.key: metric.value for metric in batch}}
            self._write("log_metrics", run_id, data, lambda batch=batch: self.client.log_batch(run_id, metrics=batch))

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set string tags on a run."""
        values = {key: str(value) for key, value in tags.items()}
        self._write("set_tags", run_id, {"tags": values},
                    lambda: self.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in values.items()]))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Store ``text`` as an artifact file of the run."""
        self._write("log_text", run_id, {"artifact_file": artifact_file, "text": text},
                    lambda: self.client.log_text(run_id, text, artifact_file))

    def log_dict(self, run_id: str, values: Mapping[str, Any], artifact_file: str) -> None:
        """Store a mapping as a YAML or JSON artifact (by the file's extension)."""
        self._write("log_dict", run_id, {"artifact_file": artifact_file, "values": dict(values)},
                    lambda: self.client.log_dict(run_id, dict(values), artifact_file))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts.

        NOTE: while the tracking server is unreachable, only the file's path is kept, not a copy of the file.
        """
        self._write("log_artifact", run_id, {"path": str(Path(path).resolve()), "artifact_path": artifact_path},
                    lambda: self.client.log_artifact(run_id, str(path), artifact_path))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run FINISHED, FAILED or KILLED."""
        self._write("end_run", run_id, {"status": status}, lambda: self.client.set_terminated(run_id, status=status))

    def find_run(self, tags: Mapping[str, str]) -> Any | None:
        """Return the newest run of the experiment carrying all ``tags``, or None."""
        conditions = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=conditions,
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs else None

    def reopen_run(self, run_id: str) -> None:
        """Mark a run RUNNING again, to continue logging to it after an interruption."""
        self._write("reopen_run", run_id, {}, lambda: self.client.update_run(run_id, status="RUNNING"))

    def fail_running_children(self, parent_run_id: str) -> int:
        """Mark every RUNNING run nested (at any depth) under ``parent_run_id`` FAILED; return how many.

        A process killed mid-run leaves its runs RUNNING; this closes them before work resumes.
        """
        closed = 0
        pending = [parent_run_id]
        while pending:
            parent = pending.pop()
            children = self.client.search_runs([self.experiment_id],
                                               filter_string=f"tags.mlflow.parentRunId = '{parent}'")
            for child in children:
                pending.append(child.info.run_id)
                if child.info.status == "RUNNING":
                    self.client.set_terminated(child.info.run_id, status="FAILED")
                    self.client.set_tag(child.info.run_id, "merdg.interrupted", "true")
                    closed += 1
        return closed

    def load_json(self, run_id: str, artifact_file: str) -> Any | None:
        """Return a JSON artifact of a run, or None when the run has no such file."""
        if not self._has_artifact(run_id, artifact_file):
            return None
        with tempfile.TemporaryDirectory() as folder:
            local = self.client.download_artifacts(run_id, artifact_file, folder)
            return json.loads(Path(local).read_text())

    def _has_artifact(self, run_id: str, artifact_file: str) -> bool:
        folder, _, name = artifact_file.rpartition("/")
        return any(item.path == artifact_file for item in self.client.list_artifacts(run_id, folder or None))

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Store a Matplotlib figure as an image artifact.

        NOTE: while the tracking server is unreachable, only the artifact's name is kept, not the figure.
        """
        self._write("log_figure", run_id, {"artifact_file": artifact_file},
                    lambda: self.client.log_figure(run_id, figure, artifact_file))
