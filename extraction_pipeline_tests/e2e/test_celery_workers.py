"""Scale-out as a team would run it: the same code location on two Celery workers (dagster-celery's
run launcher), a real broker (the RabbitMQ, else the Redis, on 127.0.0.1), the data dir on a real
S3-compatible server (SeaweedFS), Dagster's storage in the shared Postgres; one worker killed
mid-run loses no document and pays for none twice."""

import io
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.instance.instance_yaml import instance_yaml
from extraction_pipeline.instance.object_server import ObjectServer
from extraction_pipeline.instance.stores import open_store
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import drop
from extraction_pipeline_tests.e2e.processes import processes_mentioning, start, stop, wait_for
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

DAGSTER_DAEMON = str(Path(sys.executable).parent / "dagster-daemon")
BROKERS = (("pyamqp://guest:guest@127.0.0.1:5672//", 5672), ("redis://127.0.0.1:6379/15", 6379))
DOCUMENTS = 24
PER_TICK = 4  # documents per sensor tick, so the drop becomes several runs to spread


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def broker_url() -> str:
    for url, port in BROKERS:
        if _listening(port):
            return url
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail("no RabbitMQ on 127.0.0.1:5672 and no Redis on 127.0.0.1:6379")
    pytest.skip("no RabbitMQ or Redis on 127.0.0.1")


def test_runs_spread_over_two_workers_and_a_killed_worker_loses_no_document(
    tmp_path: Path,
    pg_url: str,
    object_server: ObjectServer,
    s3_data_url: str,
    model_simulator: SimulatorControl,
    broker_url: str,
) -> None:
    inbox, home = tmp_path / "inbox", tmp_path / "dagster_home"
    inbox.mkdir()
    home.mkdir()
    env = {
        "DAGSTER_HOME": str(home),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_DATA_DIR": s3_data_url,
        "EXTRACTION_INBOX": str(inbox),
        "EXTRACTION_CELERY_BROKER": broker_url,
        "EXTRACTION_CELERY_QUEUE": f"extraction-test-{uuid.uuid4().hex[:8]}",
        "EXTRACTION_RUN_SLOTS": "2",
        "EXTRACTION_SENSOR_INTERVAL": "1",
        "EXTRACTION_SENSOR_MAX_FILES": str(PER_TICK),
        "EXTRACTION_SETTLE_SECONDS": "0.2",
        "EXTRACTION_TABLES_INTERVAL": "2",
        "EXTRACTION_MAX_CONCURRENCY": "4",
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
        **object_server.client_env(),
    }
    (home / "dagster.yaml").write_text(
        instance_yaml(INSTANCE_TEMPLATE.read_text(), Settings.from_env(env))
    )
    model_simulator.configure(latency_seconds=0.5)
    workers = {
        name: start(
            [
                sys.executable, "-m", "celery", "-A", "extraction_pipeline.instance.celery_app",
                "worker", "-Q", env["EXTRACTION_CELERY_QUEUE"], "-n", f"{name}@%h",
                "--concurrency", "1", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle",
            ],
            env,
            tmp_path / f"{name}.log",
        )
        for name in ("worker1", "worker2")
    }  # fmt: skip
    daemon = start([DAGSTER_DAEMON, "run", "-w", "workspace.yaml"], env, tmp_path / "daemon.log")
    numbers = {}
    try:
        for index in range(1, DOCUMENTS + 1):
            invoice = make_invoice(index, seed=13)
            numbers[invoice.invoice_number] = index
            drop(inbox, f"invoice-{index:03d}.pdf", invoice_pdf(invoice))

        def in_flight_on(name: str) -> bool:
            log = (tmp_path / f"{name}.log").read_text()
            return "execute_job" in log and model_simulator.requests()["in_flight"] > 0

        wait_for(lambda: in_flight_on("worker1"), 120, "worker1 extracting")
        os.killpg(workers["worker1"].pid, signal.SIGKILL)  # the worker and its pool, mid-run

        store = open_store(s3_data_url, {"EXTRACTION_PG_URL": pg_url})

        def every_invoice_has_a_row() -> bool:
            if not store.exists("tables/invoices.parquet"):
                return False
            table = pq.read_table(io.BytesIO(store.get("tables/invoices.parquet")))
            return sorted(table.column("invoice_number").to_pylist()) == sorted(numbers)

        wait_for(every_invoice_has_a_row, 300, "a row for every invoice")
    finally:
        for process in (daemon, *workers.values()):
            stop(process, signal.SIGTERM, timeout=60)
    requests = model_simulator.requests()
    assert requests["paid_twice"] == [], requests["paid_twice"]
    documents = pq.read_table(io.BytesIO(store.get("tables/documents.parquet"))).to_pylist()
    assert sorted(row["status"] for row in documents) == ["extracted"] * DOCUMENTS
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in workers}
    assert all("execute_job" in log for log in logs.values()), "both workers took runs"
    assert "succeeded" in logs["worker2"]
    leftovers = [p for p in processes_mentioning(str(tmp_path)) if p.pid != os.getpid()]
    assert leftovers == [], [p.cmdline() for p in leftovers]
