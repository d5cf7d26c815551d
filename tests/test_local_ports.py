"""The local Ray instance of the main job and an MLflow server started as the README documents listen on loopback only."""

from __future__ import annotations

import ipaddress
import os
import socket

import psutil
import pytest
import ray

from merdg.tuning.job import init_ray
from tests.mlflow_server import mlflow_server

# init_ray sets these in the test process, and the fixture puts them back afterwards for the other tests.
RAY_ENV_VARS = ("RAY_GCS_SERVER_PORT", "RAY_DATA_LOGGING_CONFIG", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


def is_loopback(address: str) -> bool:
    """Whether an IPv4 or IPv6 address, including an IPv4-mapped IPv6 one, is a loopback address."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def bound_sockets(processes: list[psutil.Process]) -> list[tuple[str, str, int, str]]:
    """Return (process name, ip, port, kind) of every listening TCP socket and bound UDP socket of ``processes``."""
    found = []
    for process in processes:
        try:
            name = process.name()
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for connection in connections:
            if connection.type == socket.SOCK_STREAM and connection.status == psutil.CONN_LISTEN:
                found.append((name, connection.laddr.ip, connection.laddr.port, "tcp"))
            elif connection.type == socket.SOCK_DGRAM and connection.laddr:
                found.append((name, connection.laddr.ip, connection.laddr.port, "udp"))
    return found


@pytest.fixture
def local_ray():
    """The main job's local Ray instance, started by ``init_ray``, with the environment put back afterwards."""
    if ray.is_initialized():
        ray.shutdown()
    saved = {name: os.environ.get(name) for name in RAY_ENV_VARS}
    init_ray(None)
    yield ray
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.mark.slow
def test_ray_and_mlflow_bind_to_loopback(tmp_path, local_ray):
    # A task and an actor, so that worker processes with their own gRPC servers exist too.
    @ray.remote(num_cpus=0)
    class Echo:
        def pid(self) -> int:
            return os.getpid()

    @ray.remote(num_cpus=0)
    def task_pid() -> int:
        return os.getpid()

    echo = Echo.remote()
    ray.get([echo.pid.remote(), task_pid.remote()])

    with mlflow_server(tmp_path / "mlflow", job_execution=True) as server:
        # Ray's and MLflow's processes are all children of this one, which runs Ray's driver.
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        sockets = bound_sockets(processes)

    exposed = [entry for entry in sockets if not is_loopback(entry[1])]
    assert exposed == [], f"sockets bound beyond loopback: {exposed}"
    ports = {port for _, _, port, kind in sockets if kind == "tcp"}
    assert server.port in ports
    dashboard_host, _, dashboard_port = ray._private.worker.get_dashboard_url().rpartition(":")
    assert dashboard_host == "127.0.0.1"
    assert int(dashboard_port) in ports
    assert int(os.environ["RAY_GCS_SERVER_PORT"]) in ports
    names = {name for name, *_ in sockets}
    assert {"gcs_server", "raylet"} <= names


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
])
def test_is_loopback(address, expected):
    assert is_loopback(address) is expected
