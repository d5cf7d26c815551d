"""A real ``mlflow server`` on 127.0.0.1 for tests, started as the README documents and killed on request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MLFLOW = Path(sys.executable).with_name("mlflow")

STARTUP_LIMIT_S = 180.0
"""Maximum seconds to wait for the server's /health endpoint. With MLflow's job runner it took 9 s on an
idle 2-core machine and 80 s on the same machine under heavy load."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class MlflowServer:
    """A running ``mlflow server`` process group, its URI and its SQLite store."""

    process: subprocess.Popen
    uri: str
    port: int
    store: Path
    log: Path

    def kill(self) -> None:
        """Kill the server and its worker processes with SIGKILL, as a crash would, and reap it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def mlflow_server(folder: Path, port: int | None = None, *, job_execution: bool = False) -> Iterator[MlflowServer]:
    """Start ``mlflow server --host 127.0.0.1`` on a SQLite store in ``folder``, and kill it on exit.

    The server runs in its own process group, so that killing it also kills its uvicorn and job
    runner children. Its artifacts go to ``folder/mlartifacts``. ``job_execution`` keeps MLflow's
    job runner, which starts seven more processes; tracking does not need it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    store = folder / "mlflow.db"
    log = folder / f"server-{port}.log"
    command = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{store}", "--workers", "1"]
    env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if job_execution else "false"}
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = MlflowServer(process, f"http://127.0.0.1:{port}", port, store, log)
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while not _healthy(server.uri):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server on port {port} did not start; its log:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        server.kill()
