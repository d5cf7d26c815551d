"""End-to-end: the MLflow UI of a tracking server shows a sweep of the real main job.

The test runs a tiny sweep against ``mlflow server`` on 127.0.0.1 and loads UI pages in Debian's
headless Chromium. It checks the DOM that the React app rendered: the experiment, the sweep run, a
cell run and a trial run with their parent and child links, the results table and the cell plot.
Each page's screenshot and DOM are saved to the folder that ``MERDG_TEST_ARTIFACTS`` names
(``tmp_path`` by default), in ``mlflow_ui/``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.mlflow_server import free_port, mlflow_server
from tests.pipelines.test_tune_all_domains import ONE_TRIAL, TINY_TRAINING, run_main_job, sweep_experiment

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS_ENV = "MERDG_TEST_ARTIFACTS"

# --virtual-time-budget lets the page run for 20 s of virtual time before Chromium prints the DOM.
# Virtual time does not advance while a request is pending (checked with Chromium 156 and a response
# delayed by 30 s), so a slow server delays the dump and does not cut it short.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--window-size=1600,1000", "--virtual-time-budget=20000",
]

VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class RenderedPage:
    """What a DOM dump shows: its text nodes in order, its links, its ARIA tables and its images."""

    lines: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    """(href, text) of every ``<a>``."""
    tables: list[list[list[str]]] = field(default_factory=list)
    """Every ``role="table"`` element as rows of cell texts, the header row included."""
    images: list[tuple[str, str]] = field(default_factory=list)
    """(alt, src) of every ``<img>``."""

    def line_after(self, label: str) -> str:
        """Return the text node that follows the first text node equal to ``label``."""
        assert label in self.lines, f"{label!r} not on the page"
        return self.lines[self.lines.index(label) + 1]


class DomParser(HTMLParser):
    """Collect a ``RenderedPage`` from the HTML that ``chromium --dump-dom`` prints."""

    def __init__(self) -> None:
        super().__init__()
        self.page = RenderedPage()
        self.open_elements: list[tuple[str, str | None]] = []
        self.skipped_depth = 0
        self.link: tuple[str, list[str]] | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.page.images.append((attributes.get("alt") or "", attributes.get("src") or ""))
        if tag in VOID_ELEMENTS:
            return
        role = attributes.get("role")
        self.open_elements.append((tag, role))
        if tag in ("script", "style"):
            self.skipped_depth += 1
        elif tag == "a":
            self.link = (attributes.get("href") or "", [])
        elif role == "table":
            self.page.tables.append([])
        elif role == "row":
            self.row = []
        elif role in ("cell", "columnheader"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_ELEMENTS or not any(name == tag for name, _ in self.open_elements):
            return
        # Close the innermost open element of this name, and any left open inside it.
        while self.open_elements:
            name, role = self.open_elements.pop()
            self.close_element(name, role)
            if name == tag:
                break

    def close_element(self, tag: str, role: str | None) -> None:
        if tag in ("script", "style"):
            self.skipped_depth -= 1
        elif tag == "a" and self.link is not None:
            href, text = self.link
            self.page.links.append((href, "".join(text).strip()))
            self.link = None
        elif role in ("cell", "columnheader") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif role == "row" and self.row is not None:
            if self.page.tables:
                self.page.tables[-1].append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.skipped_depth:
            return
        for buffer in (self.cell, self.link[1] if self.link else None):
            if buffer is not None:
                buffer.append(data)
        if data.strip():
            self.page.lines.append(data.strip())


def remote_addresses(net_log: Path) -> set[str]:
    """Return every address that Chromium opened a TCP connection to or sent a UDP datagram to.

    Reads a ``--log-net-log`` file. Only UDP sockets with sent bytes count, because connecting a UDP
    socket puts no packet on the network. Chromium 156 connects one to 2001:4860:4860::8888 port 443
    on every page and sends nothing on it.
    """
    log = json.loads(net_log.read_text())
    names = {code: name for name, code in log["constants"]["logEventTypes"].items()}
    addresses: set[str] = set()
    udp_targets: dict[int, str] = {}
    for event in log["events"]:
        name = names.get(event["type"])
        params = event.get("params") or {}
        source = event["source"]["id"]
        if name == "TCP_CONNECT_ATTEMPT" and "address" in params:
            addresses.add(params["address"])
        elif name == "UDP_CONNECT" and "address" in params:
            udp_targets[source] = params["address"]
        elif name == "UDP_BYTES_SENT":
            addresses.add(params.get("address") or udp_targets.get(source, "unknown UDP destination"))
    return addresses


def is_loopback(address: str) -> bool:
    """Whether a net log address such as ``127.0.0.1:5000`` or ``[::1]:443`` is on a loopback interface."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Browser:
    """Headless Chromium that reaches 127.0.0.1 alone, and keeps each page's screenshot and DOM."""

    def __init__(self, artifacts: Path, profiles: Path) -> None:
        self.artifacts = artifacts
        self.profiles = profiles
        # Chromium sends every request that is not for a loopback address to this proxy, where
        # nothing listens, and resolves no host name but 127.0.0.1.
        self.blocking_flags = [
            f"--proxy-server=http://127.0.0.1:{free_port()}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ]

    def render(self, name: str, url: str) -> RenderedPage:
        """Load ``url`` with a fresh profile, save ``name``.png and ``name``.html, and parse the DOM."""
        screenshot = self.artifacts / f"{name}.png"
        net_log = self.profiles / f"{name}.netlog.json"
        command = [
            str(CHROMIUM), *CHROMIUM_FLAGS, *self.blocking_flags,
            f"--user-data-dir={self.profiles / name}", f"--log-net-log={net_log}",
            f"--screenshot={screenshot}", "--dump-dom", url,
        ]
        process = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert process.returncode == 0, f"chromium failed on {url}:\n{process.stderr[-4000:]}"
        (self.artifacts / f"{name}.html").write_text(process.stdout)
        assert screenshot.is_file(), f"chromium wrote no screenshot of {url}:\n{process.stderr[-4000:]}"

        outside = sorted(a for a in remote_addresses(net_log) if not is_loopback(a))
        assert not outside, f"chromium reached beyond loopback on {url}: {outside}"

        parser = DomParser()
        parser.feed(process.stdout)
        parser.close()
        return parser.page


def markdown_table(text: str) -> list[list[str]]:
    """Return the rows of the pipe table in a Markdown text, the header row included."""
    rows = [line.strip() for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows if not row.startswith("|---")]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason=f"{CHROMIUM} not found: install Debian's chromium package; .ci/run does")
def test_mlflow_ui_shows_sweep(tmp_path):
    artifacts = Path(os.environ.get(ARTIFACTS_ENV, tmp_path)) / "mlflow_ui"
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"MLflow UI screenshots and DOM dumps: {artifacts}")
    browser = Browser(artifacts, tmp_path / "chromium")

    with mlflow_server(tmp_path / "mlflow") as server:
        run_main_job([
            "--data.cache_dir", str(tmp_path / "cache"),
            "--data.benchmark.num_classes", "3",
            "--data.benchmark.clips_per_class", "4",
            "--tune.targets", "[retro]",
            *TINY_TRAINING,
            *ONE_TRIAL,
            "--tracking.tracking_uri", server.uri,
        ], tmp_path)

        client = MlflowClient(server.uri)
        experiment = sweep_experiment(client)
        runs = client.search_runs([experiment.experiment_id])
        sweep = next(r for r in runs if r.info.run_name.startswith("sweep-"))
        cell = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id)
        children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == cell.info.run_id),
                          key=lambda r: r.info.run_name)
        trial = next(r for r in children if r.data.tags["merdg.phase"] == "search")
        base = f"{server.uri}/#/experiments/{experiment.experiment_id}"

        def run_link(run) -> tuple[str, str]:
            return f"#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}", run.info.run_name

        # The experiment's runs table lists the sweep run, and its nested runs stay collapsed under it.
        page = browser.render("experiment_runs", f"{base}/runs")
        assert experiment.name in page.lines
        assert run_link(sweep) in page.links

        page = browser.render("cell_run", f"{base}/runs/{cell.info.run_id}")
        assert cell.info.run_name in page.lines
        assert page.line_after("Parent run") == sweep.info.run_name
        assert run_link(sweep) in page.links
        assert "Child runs" in page.lines
        for child in children:
            assert run_link(child) in page.links
        assert page.line_after("merdg.cell_id").removeprefix(":").strip() == cell.data.tags["merdg.cell_id"]

        page = browser.render("trial_run", f"{base}/runs/{trial.info.run_id}")
        assert trial.info.run_name in page.lines
        assert page.line_after("Parent run") == cell.info.run_name
        assert run_link(cell) in page.links
        assert page.line_after("merdg.phase").removeprefix(":").strip() == "search"

        page = browser.render("sweep_results_md", f"{base}/runs/{sweep.info.run_id}/artifacts/results/results.md")
        stored = Path(client.download_artifacts(sweep.info.run_id, "results/results.md", str(tmp_path))).read_text()
        heading = next(line for line in stored.splitlines() if line.startswith("#")).lstrip("# ")
        assert heading in page.lines
        # NOTE: the UI renders Markdown tables in a virtualized table, which leaves rows below the
        # visible area out of the DOM. This sweep's table has one data row.
        assert markdown_table(stored) in page.tables

        page = browser.render("cell_plot", f"{base}/runs/{cell.info.run_id}/artifacts/plots/lambda_vs_accuracy.png")
        assert "cell.json" in page.lines
        plots = [src for alt, src in page.images if alt == "plots/lambda_vs_accuracy.png"]
        assert plots, page.images
        assert plots[0].startswith("blob:"), plots


def test_remote_addresses_of_net_log(tmp_path):
    codes = {"TCP_CONNECT_ATTEMPT": 1, "UDP_CONNECT": 2, "UDP_BYTES_SENT": 3}
    events = [
        {"type": 1, "source": {"id": 10}, "params": {"address": "127.0.0.1:5000"}},
        {"type": 1, "source": {"id": 11}, "params": {"address": "192.0.2.7:443"}},
        {"type": 2, "source": {"id": 12}, "params": {"address": "[2001:4860:4860::8888]:443"}},
        {"type": 2, "source": {"id": 13}, "params": {"address": "198.51.100.1:53"}},
        {"type": 3, "source": {"id": 13}, "params": {"byte_count": 40}},
    ]
    net_log = tmp_path / "net.json"
    net_log.write_text(json.dumps({"constants": {"logEventTypes": codes}, "events": events}))
    addresses = remote_addresses(net_log)
    assert addresses == {"127.0.0.1:5000", "192.0.2.7:443", "198.51.100.1:53"}
    assert [a for a in sorted(addresses) if not is_loopback(a)] == ["192.0.2.7:443", "198.51.100.1:53"]
    assert is_loopback("[::1]:443")
