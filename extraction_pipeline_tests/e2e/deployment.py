"""A real deployment for crash tests: the shipped dagster.yaml, a dagster-daemon on Postgres, the
model simulator over HTTP, and the checks every recovery must pass."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil
import pyarrow.parquet as pq

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.instance.facts import UNFINISHED
from extraction_pipeline.instance.history import document_history
from extraction_pipeline.instance.names import EXTRACTION_KEY, documents_partitions
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import drop
from extraction_pipeline_tests.e2e.processes import dagster_home, start, stop, wait_for
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

DAGSTER_DAEMON = str(Path(sys.executable).parent / "dagster-daemon")
CLI = str(Path(sys.executable).parent / "extraction-pipeline")


@dataclass
class Deployment:
    """The daemon (restartable) of one test, its folders and the documents dropped into it."""

    tmp_path: Path
    pg_url: str
    simulator: SimulatorControl
    extra_env: dict[str, str] = field(default_factory=dict)
    invoice_numbers: dict[str, str] = field(default_factory=dict)  # file name -> number
    daemon: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.home = dagster_home(self.tmp_path)
        self.inbox = self.tmp_path / "inbox"
        self.data_dir = self.tmp_path / "data"
        self.inbox.mkdir()

    @property
    def env(self) -> dict[str, str]:
        return {
            "DAGSTER_HOME": str(self.home),
            "EXTRACTION_PG_URL": self.pg_url,
            "EXTRACTION_DATA_DIR": str(self.data_dir),
            "EXTRACTION_INBOX": str(self.inbox),
            "EXTRACTION_SENSOR_INTERVAL": "1",
            "EXTRACTION_TABLES_INTERVAL": "2",
            "EXTRACTION_SETTLE_SECONDS": "0.5",
            "EXTRACTION_MAX_CONCURRENCY": "4",
            "OPENAI_BASE_URL": self.simulator.base_url,
            "OPENAI_API_KEY": TEST_API_KEY,
            **self.extra_env,
        }

    def start_daemon(self) -> None:
        self.starts += 1
        log = self.tmp_path / f"daemon-{self.starts}.log"
        self.daemon = start([DAGSTER_DAEMON, "run", "-w", "workspace.yaml"], self.env, log)

    def start_dev(self, port: int) -> None:
        """`extraction-pipeline dev` as a user runs it: its own embedded Postgres."""
        self.starts += 1
        log = self.tmp_path / f"dev-{self.starts}.log"
        env = {**self.env, "EXTRACTION_PG_URL": ""}
        self.daemon = start([CLI, "dev", "--port", str(port)], env, log)

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            stop(self.daemon)
            self.daemon = None

    @contextlib.contextmanager
    def running(self, documents: int) -> Iterator[None]:
        """The daemon running, with `documents` invoices dropped into the inbox; stopped after."""
        self.start_daemon()
        try:
            self.drop_invoices(documents)
            yield
        finally:
            self.stop_daemon()

    def drop_invoices(self, count: int) -> None:
        for number in range(1, count + 1):
            invoice = make_invoice(number)
            name = f"invoice-{number:03d}.pdf"
            self.invoice_numbers[name] = invoice.invoice_number
            drop(self.inbox, name, invoice_pdf(invoice))

    def answered_documents(self, after: float = 0.0) -> Counter[str]:
        """Invoice numbers the model answered successfully (paid calls), counted."""
        return answered_numbers(self.simulator, set(self.invoice_numbers.values()), after)

    def extracted_numbers(self) -> set[str]:
        """Invoice numbers whose extraction is stored in the data dir (paid and kept)."""
        cache = self.data_dir / "cache" / "extractions"
        texts = [path.read_text() for path in cache.glob("*/*.json")] if cache.exists() else []
        return {n for n in self.invoice_numbers.values() if any(n in text for text in texts)}


def answered_numbers(
    simulator: SimulatorControl, numbers: set[str], after: float = 0.0
) -> Counter[str]:
    """Which of the invoice `numbers` the model answered successfully (paid calls) since
    `after`, counted."""
    answered: Counter[str] = Counter()
    for request in simulator.requests()["requests"]:
        if request["status_code"] == 200 and request["started_at"] >= after:
            answered.update(n for n in numbers if n in request["document_excerpt"])
    return answered


def table_rows(data_dir: Path, name: str) -> list[dict]:
    path = data_dir / "tables" / f"{name}.parquet"
    if not path.exists():
        return []
    return pq.read_table(io.BytesIO(path.read_bytes())).to_pylist()


_STARTED_INTAKE = dg.RunsFilter(job_name="intake_job", statuses=[dg.DagsterRunStatus.STARTED])


def wait_for_run(
    instance: dg.DagsterInstance, simulator: SimulatorControl, done: int
) -> dg.DagsterRun:
    """The started run, once it has stored at least `done` answers and has calls in flight."""

    def extracting() -> bool:
        started = instance.get_runs(_STARTED_INTAKE)
        answered = sum(1 for r in simulator.requests()["requests"] if r["status_code"] == 200)
        return bool(started) and answered >= done and simulator.requests()["in_flight"] > 0

    wait_for(extracting, timeout=150, what=f"a run with {done} answers and calls in flight")
    (run,) = instance.get_runs(_STARTED_INTAKE, limit=1)
    return run


def run_worker(instance: dg.DagsterInstance, run_id: str) -> psutil.Process:
    """The run's process, as its own RUN_START event records it."""
    (started,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    assert started.dagster_event is not None and started.dagster_event.pid is not None
    return psutil.Process(started.dagster_event.pid)


def wait_until_settled(
    instance: dg.DagsterInstance, deployment: Deployment, count: int, timeout: float = 240
) -> float:
    """Seconds until every document is extracted, every run finished and the table holds them."""
    began = time.monotonic()

    def settled() -> bool:
        keys = instance.get_dynamic_partitions("documents")
        if len(keys) != count:
            return False
        status = instance.get_status_by_partition(EXTRACTION_KEY, keys, documents_partitions)
        if any(status.get(k) != dg.AssetPartitionStatus.MATERIALIZED for k in keys):
            return False
        unfinished = instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))
        rows = table_rows(deployment.data_dir, "documents")
        return not unfinished and len(rows) == count

    wait_for(settled, timeout=timeout, what=f"{count} documents extracted and in the table")
    return time.monotonic() - began


def assert_recovered(
    instance: dg.DagsterInstance,
    deployment: Deployment,
    count: int,
    kept_before_crash: set[str],
    crashed_at: float,
    run_crashed: bool = True,
) -> None:
    """Every document extracted exactly once in the tables, nothing that was stored before the
    crash asked of the model again, and history showing the crashed attempt and the finishing one.
    """
    rows = table_rows(deployment.data_dir, "documents")
    keys = sorted(instance.get_dynamic_partitions("documents"))
    assert sorted(row["document_key"] for row in rows) == keys
    assert {row["status"] for row in rows} == {"extracted"}
    invoices = table_rows(deployment.data_dir, "invoices")
    assert sorted(r["invoice_number"] for r in invoices) == sorted(
        deployment.invoice_numbers.values()
    )
    asked_again = deployment.answered_documents(after=crashed_at)
    assert not kept_before_crash & set(asked_again), "paid again for stored answers"
    total = deployment.answered_documents()
    assert all(n <= 2 for n in total.values())  # at most the one lost in flight at the crash
    crashed = [
        run
        for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        if run.job_name == "intake_job"
    ]
    assert bool(crashed) == run_crashed, crashed
    for key in keys if run_crashed else ():
        attempts = [a for a in document_history(instance, key) if a.asset == "extraction"]
        runs = {a.run_id for a in attempts}
        assert runs & {run.run_id for run in crashed}, f"{key}: crashed attempt not in history"
        assert attempts[-1].outcome in {"extracted", "needs_review"}, (key, attempts)
