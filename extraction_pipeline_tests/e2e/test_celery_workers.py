"""Scale-out as a team would run it: the same code location on two Celery workers (dagster-celery's
run launcher), a real broker (the RabbitMQ, else the Redis, on 127.0.0.1), the data dir on a real
S3-compatible server (SeaweedFS), Dagster's storage in the shared Postgres; one worker killed
mid-run loses no document and pays for none twice."""

import contextlib
import io
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.instance.instance_yaml import instance_yaml
from extraction_pipeline.instance.names import PARENT_RUN_TAG
from extraction_pipeline.instance.object_server import ObjectServer
from extraction_pipeline.instance.stores import open_store
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import drop
from extraction_pipeline_tests.e2e.deployment import answered_numbers
from extraction_pipeline_tests.e2e.processes import processes_mentioning, start, stop, wait_for
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

DAGSTER_DAEMON = str(Path(sys.executable).parent / "dagster-daemon")
RECEIVED = re.compile(r"Task execute_job\[([0-9a-f-]+)\] received")
SUCCEEDED = re.compile(r"Task execute_job\[([0-9a-f-]+)\] succeeded")
DOCUMENTS = 24
PER_TICK = 4  # documents per sensor tick, so the drop becomes several runs to spread


def stored_numbers(store: ObjectStore, numbers: set[str]) -> set[str]:
    """Invoice numbers whose model answer is stored (paid and kept)."""
    texts = [store.get(name).decode() for name in store.list("cache")]
    return {n for n in numbers if any(n in text for text in texts)}


def test_runs_spread_over_two_workers_and_a_killed_worker_loses_no_document(
    tmp_path: Path,
    pg_url: str,
    object_server: ObjectServer,
    s3_data_url: str,
    model_simulator: SimulatorControl,
    broker_url: str,
    monkeypatch: pytest.MonkeyPatch,
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
    model_simulator.configure(latency_seconds=2.0)  # runs overlap: both workers get some
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
    stack = contextlib.ExitStack()
    try:
        for index in range(1, DOCUMENTS + 1):
            invoice = make_invoice(index, seed=13)
            numbers[invoice.invoice_number] = index
            drop(inbox, f"invoice-{index:03d}.pdf", invoice_pdf(invoice))

        def running_on(name: str) -> set[str]:
            """Ids of the run tasks the worker received and has not finished."""
            log = (tmp_path / f"{name}.log").read_text()
            return set(RECEIVED.findall(log)) - set(SUCCEEDED.findall(log))

        def worker1_mid_run() -> bool:
            """worker1's run started its extraction a moment ago: its calls are in flight."""
            for task_id in running_on("worker1"):
                runs = instance.get_runs(dg.RunsFilter(tags={DAGSTER_CELERY_TASK_ID_TAG: task_id}))
                if runs and runs[0].status == dg.DagsterRunStatus.STARTED:
                    record = instance.get_run_record_by_id(runs[0].run_id)
                    started = record.start_time if record else None
                    return started is not None and time.time() - started > 1.5
            return False

        store = open_store(s3_data_url, {"EXTRACTION_PG_URL": pg_url})
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        wait_for(worker1_mid_run, 120, "worker1 extracting")
        killed = running_on("worker1")
        os.killpg(workers["worker1"].pid, signal.SIGKILL)  # the worker and its pool, mid-run
        killed_at = time.time()
        stored_before_kill = stored_numbers(store, set(numbers))

        def every_invoice_has_a_row() -> bool:
            if not store.exists("tables/invoices.parquet"):
                return False
            table = pq.read_table(io.BytesIO(store.get("tables/invoices.parquet")))
            return sorted(table.column("invoice_number").to_pylist()) == sorted(numbers)

        wait_for(every_invoice_has_a_row, 300, "a row for every invoice")
        # The killed run: failed by run monitoring, then retried to success.
        (killed_run,) = instance.get_runs(
            dg.RunsFilter(tags={DAGSTER_CELERY_TASK_ID_TAG: next(iter(killed))})
        )

        def retried() -> bool:
            retry = instance.get_runs(dg.RunsFilter(tags={PARENT_RUN_TAG: killed_run.run_id}))
            return bool(retry) and retry[0].status == dg.DagsterRunStatus.SUCCESS

        wait_for(retried, 120, "the killed run's retry")
        killed_status = instance.get_run_by_id(killed_run.run_id)
        assert killed_status is not None and killed_status.status == dg.DagsterRunStatus.FAILURE
    finally:
        stack.close()
        for process in (daemon, *workers.values()):
            stop(process, signal.SIGTERM, timeout=60)
    # Nothing stored before the kill was asked again; only the calls in flight on the killed
    # worker (billed by the provider, their answers lost with it) were asked a second time.
    answered = answered_numbers(model_simulator, set(numbers))
    asked_again = answered_numbers(model_simulator, set(numbers), after=killed_at)
    assert not stored_before_kill & set(asked_again)
    twice = [n for n, count in answered.items() if count > 1]
    assert len(twice) <= int(env["EXTRACTION_MAX_CONCURRENCY"]) and max(answered.values()) <= 2
    assert sorted(answered) == sorted(numbers)
    documents = pq.read_table(io.BytesIO(store.get("tables/documents.parquet"))).to_pylist()
    assert sorted(row["status"] for row in documents) == ["extracted"] * DOCUMENTS
    worker2 = (tmp_path / "worker2.log").read_text()
    assert SUCCEEDED.findall(worker2), "the surviving worker took runs too"
    # The killed run's task went back to the broker and on to the surviving worker (which found
    # its run started elsewhere); run monitoring failed that run and a run retry extracted the
    # rest of its documents.
    assert killed <= set(RECEIVED.findall(worker2))
    leftovers = [p for p in processes_mentioning(str(tmp_path)) if p.pid != os.getpid()]
    assert leftovers == [], [p.cmdline() for p in leftovers]
