"""Batch mode as a user runs it: `batch submit` on a running `dev` (its own model simulator, no
API key), `batch status` while the batch is open, a restart of `dev` before it ends, then the
answers recorded by the daemon and `batch retrieve` writing records that match the schema."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.e2e.processes import cli, free_port, start_dev, stop, wait_for

DOCUMENTS = 3


@pytest.fixture
def env(tmp_path: Path, pg_url: str) -> dict[str, str]:
    """`dev` and the commands beside it; no OPENAI_API_KEY: `dev` serves the simulator."""
    return {
        "DAGSTER_HOME": str(tmp_path / "home"),
        "EXTRACTION_DATA_DIR": str(tmp_path / "data"),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_UI_PORT": str(free_port()),
        "EXTRACTION_BATCH_POLL_SECONDS": "1",
        "EXTRACTION_SIMULATOR_LATENCY": "0",
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": "",
    }


def dev_simulator(env: dict[str, str]) -> SimulatorControl:
    endpoint = Path(env["DAGSTER_HOME"]) / "simulator" / "endpoint.json"
    base_url = json.loads(endpoint.read_text())["base_url"]
    return SimulatorControl(base_url.removesuffix("/v1"))


def batch_status(env: dict[str, str]) -> dict:
    status = cli(env, "batch", "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    return json.loads(status.stdout)


def test_a_batch_survives_a_restart_of_dev_and_is_retrieved(
    tmp_path: Path, env: dict[str, str]
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for index in range(DOCUMENTS):
        (folder / f"invoice-{index}.pdf").write_bytes(invoice_pdf(make_invoice(index)))
    dev = start_dev(env, tmp_path / "dev-1.log")
    try:
        # Each phase of a batch lasts 8 s: still open when `dev` comes back.
        dev_simulator(env).configure(batch_phase_seconds=8.0)
        submitted = cli(env, "batch", "submit", str(folder))
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        (batch_id,) = submitted.stdout.split()
        assert batch_status(env)["status"] == "open"

        assert stop(dev, signal.SIGINT, timeout=90) == 0
        assert batch_status(env)["status"] == "open"  # recorded in the event log, dev down
        dev = start_dev(env, tmp_path / "dev-2.log")
        wait_for(lambda: batch_status(env)["status"] != "open", 180, "the batch to end")
        wait_for(lambda: len(rows(env)) == DOCUMENTS, 120, "the answers in the tables")
        retrieved = cli(env, "batch", "retrieve", "--out", str(tmp_path / "out"))
        listed = cli(env, "batch", "list", "--json")
    finally:
        stop(dev, signal.SIGINT, timeout=90)

    assert batch_status(env)["status"] == "completed"
    assert retrieved.returncode == 0, retrieved.stderr[-2000:]
    files = sorted((tmp_path / "out").glob("*.json"))
    assert len(files) == DOCUMENTS
    numbers = {Invoice.model_validate_json(f.read_text()).invoice_number for f in files}
    assert numbers == {make_invoice(i).invoice_number for i in range(DOCUMENTS)}
    assert [entry["batch_id"] for entry in json.loads(listed.stdout)] == [batch_id]
    documents = rows(env)
    assert all(row["status"] == "extracted" for row in documents)
    assert all(row["attempts"] == 1 for row in documents)


def rows(env: dict[str, str]) -> list[dict]:
    table = Path(env["EXTRACTION_DATA_DIR"]) / "tables" / "documents.parquet"
    if not table.exists():
        return []
    return pq.read_table(io.BytesIO(table.read_bytes())).to_pylist()
