"""Background runs as a user runs them: `ingest --background` queues runs on a running `dev` and
returns at once; `runs status` and `runs wait` follow them from other processes, across a
restart of `dev`."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.e2e.processes import (
    cli,
    free_port,
    start_dev,
    stop,
    wait_for,
)
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

DOCUMENTS = 3
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@pytest.fixture
def env(tmp_path: Path, pg_url: str, model_simulator: SimulatorControl) -> dict[str, str]:
    """The environment of `dev` and of every command beside it: one deployment."""
    return {
        "DAGSTER_HOME": str(tmp_path / "home"),
        "EXTRACTION_DATA_DIR": str(tmp_path / "data"),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_UI_PORT": str(free_port()),
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
    }


def test_background_runs_return_at_once_and_are_followed_across_a_restart_of_dev(
    tmp_path: Path, env: dict[str, str], model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(latency_seconds=2.0)
    folder = tmp_path / "scans"
    folder.mkdir()
    numbers = []
    for index in range(1, DOCUMENTS + 1):
        invoice = make_invoice(index)
        numbers.append(invoice.invoice_number)
        (folder / f"invoice-{index}.pdf").write_bytes(invoice_pdf(invoice))
    dev = start_dev(env, tmp_path / "dev-1.log")
    try:
        began = time.monotonic()
        queued = cli(env, "ingest", "--background", str(folder))
        took = time.monotonic() - began
        assert queued.returncode == 0, queued.stderr[-3000:]
        run_ids = queued.stdout.split()
        assert len(run_ids) == DOCUMENTS  # a run per document (fewer than 20)

        status = cli(env, "runs", "status", *run_ids, "--json")
        assert status.returncode == 0, status.stderr[-3000:]
        reports = json.loads(status.stdout)["runs"]
        assert [r["run_id"] for r in reports] == run_ids
        assert {r["trigger"] for r in reports} == {"ingest-background"}
        assert {r["job"] for r in reports} == {"intake_job"}
        assert sum(len(r["documents"]) for r in reports) == DOCUMENTS
        # Returned at once: the runs had not all ended when it printed their ids (nor even
        # when a second process asked about them).
        assert not all(r["status"] in FINISHED for r in reports), reports
        assert took < 10, took

        wait_for(lambda: model_simulator.requests()["in_flight"] > 0, 120, "a call in flight")
        assert stop(dev, signal.SIGINT, timeout=90) == 0
        # With `dev` down, the runs are queued or wait for their run retries: not over yet.
        assert cli(env, "runs", "wait", *run_ids, "--timeout", "1").returncode == 3
        dev = start_dev(env, tmp_path / "dev-2.log")
        waited = cli(env, "runs", "wait", *run_ids, "--timeout", "180", "--json")
    finally:
        stop(dev, signal.SIGINT, timeout=90)
    assert waited.returncode == 0, waited.stdout[-3000:] + waited.stderr[-3000:]
    finals = json.loads(waited.stdout)["runs"]
    assert {f["status"] for f in finals} == {"SUCCESS"}
    documents = [d for f in finals for d in f["documents"]]
    assert [d["outcome"] for d in documents] == ["extracted"] * DOCUMENTS
    # The run stopped mid-call was relaunched by run retries, and `wait` followed it.
    assert any(len(f["run_ids"]) > 1 for f in finals), finals
    answered = Counter(
        number
        for request in model_simulator.requests()["requests"]
        if request["status_code"] == 200
        for number in numbers
        if number in request["document_excerpt"]
    )
    assert answered == Counter(numbers), "every invoice extracted, each paid for once"


def test_background_ingest_without_dev_exits_2_and_registers_nothing(
    tmp_path: Path, env: dict[str, str], instance: dg.DagsterInstance
) -> None:
    (tmp_path / "invoice.pdf").write_bytes(invoice_pdf(make_invoice(1)))

    result = cli(env, "ingest", "--background", str(tmp_path / "invoice.pdf"))

    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("start `extraction-pipeline dev` first: background runs are queued")
    assert not (tmp_path / "data").exists()
    assert instance.get_dynamic_partitions("documents") == []


def test_status_of_an_unknown_run_exits_2(env: dict[str, str]) -> None:
    unknown = str(uuid.uuid4())

    result = cli(env, "runs", "status", unknown)

    assert result.returncode == 2
    assert result.stderr.strip() == f"no run with id {unknown}"
