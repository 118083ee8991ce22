"""EXTRACTION_DATA_DIR=s3://...: the CLI's ingest, status and history with every stored byte
in a real S3-compatible server (SeaweedFS on loopback) and Dagster's storage in Postgres."""

import io
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.instance.object_server import ObjectServer
from extraction_pipeline.instance.stores import open_store
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.e2e.processes import (
    PROJECT_ROOT,
    answers,
    free_port,
    processes_mentioning,
    start,
    stop,
    wait_for,
)
from extraction_pipeline_tests.e2e.test_cli_operations import CLI
from extraction_pipeline_tests.pdfs import truncated_pdf
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY


def test_ingest_status_and_history_with_the_data_dir_on_object_storage(
    tmp_path: Path,
    object_server: ObjectServer,
    s3_data_url: str,
    pg_url: str,
    model_simulator: SimulatorControl,
) -> None:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "EXTRACTION_PG_URL": pg_url,
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
        **object_server.client_env(),
        "EXTRACTION_DATA_DIR": s3_data_url,
        "EXTRACTION_INBOX": str(tmp_path / "inbox"),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )

    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(invoice_pdf(make_invoice(1, seed=5)))
    (folder / "b.pdf").write_bytes(invoice_pdf(make_invoice(2, seed=5)))
    (folder / "broken.pdf").write_bytes(truncated_pdf())

    ingest = cli("ingest", str(folder), "--json")

    assert ingest.returncode == 1, ingest.stderr[-2000:]
    summary = json.loads(ingest.stdout)
    assert summary["extracted"] == 2 and summary["failed_count"] == 1
    store = open_store(s3_data_url, {"EXTRACTION_PG_URL": pg_url})
    assert len(list(store.list("originals"))) == 3
    documents = pq.read_table(io.BytesIO(store.get("tables/documents.parquet"))).to_pylist()
    assert sorted(row["status"] for row in documents) == ["extracted", "extracted", "failed"]
    invoices = pq.read_table(io.BytesIO(store.get("tables/invoices.parquet")))
    assert invoices.num_rows == 2
    assert store.exists("tables/dead_letters.parquet")
    assert not (tmp_path / "data").exists()  # nothing went to a local data dir

    status = json.loads(cli("status", "--json").stdout)
    assert status["counts"]["extracted"] == 2 and status["counts"]["dead_letter"] == 1
    history = json.loads(cli("history", "broken.pdf", "--json").stdout)
    assert {a["job"] for a in history["attempts"]} == {"source_job"}  # unreadable: no extraction
    again = cli("ingest", str(folder / "a.pdf"), "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["reused"] == 1

    # The secret key is in no file the deployment wrote (logs, event log dumps, the store).
    secret = object_server.secret_key
    written = [p for p in (tmp_path / "home").rglob("*") if p.is_file()]
    assert not [p for p in written if secret.encode() in p.read_bytes()]
    stored = [
        n for prefix in ("originals", "registry", "records", "tables") for n in store.list(prefix)
    ]
    assert stored and not [n for n in stored if secret.encode() in store.get(n)]


def test_dev_with_object_storage_and_workers_extracts_an_uploaded_pdf_and_stops_everything(
    tmp_path: Path,
    pg_url: str,
    model_simulator: SimulatorControl,
    monkeypatch: pytest.MonkeyPatch,
    broker_url: str,
) -> None:
    port = free_port()
    queue = f"extraction-dev-test-{uuid.uuid4().hex[:8]}"
    env = {
        "EXTRACTION_CELERY_BROKER": broker_url,
        "EXTRACTION_CELERY_QUEUE": queue,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_INBOX": "s3://extraction/inbox",  # the drop folder in the same bucket
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
    }
    log = tmp_path / "dev.log"
    command = [CLI, "dev", "--port", str(port), "--storage", "s3", "--workers", "2"]
    dev = start(command, env, log)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/server_info"), 180, "the UI")
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in log.read_text().splitlines()
            if line.startswith("export ")
        )
        assert exports["EXTRACTION_DATA_DIR"] == "s3://extraction/data"
        assert "Celery workers 2" in log.read_text()
        workers = [p for p in processes_mentioning(queue) if "celery_app" in " ".join(p.cmdline())]
        assert len(workers) >= 2  # two workers (and their pools' children)
        # `demo` with the printed exports uploads a sample invoice to the S3 drop folder.
        demo = subprocess.run(
            [CLI, "demo", "--count", "1"],
            env={**os.environ, **env, **exports},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0 and "s3://extraction/inbox" in demo.stdout, demo.stderr
        invoice = make_invoice(1, seed=7)  # demo's first sample
        for name, value in exports.items():
            monkeypatch.setenv(name, value)
        store = open_store(exports["EXTRACTION_DATA_DIR"], {"EXTRACTION_PG_URL": pg_url})

        def invoice_row() -> bool:
            if not store.exists("tables/invoices.parquet"):
                return False
            table = pq.read_table(io.BytesIO(store.get("tables/invoices.parquet")))
            return table.column("invoice_number").to_pylist() == [invoice.invoice_number]

        wait_for(invoice_row, 120, "the uploaded invoice's row in object storage")
        assert not (tmp_path / "data").exists() and not (PROJECT_ROOT / "inbox").exists()
        assert not (tmp_path / "inbox").exists()
    finally:
        code = stop(dev, signal.SIGINT, timeout=90)
    assert code == 0, log.read_text()[-3000:]
    leftovers = [
        p
        for p in [*processes_mentioning(str(tmp_path)), *processes_mentioning(queue)]
        if p.pid != os.getpid()
    ]
    assert leftovers == [], [p.cmdline() for p in leftovers]  # object server and workers too
