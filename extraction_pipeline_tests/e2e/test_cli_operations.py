"""`ingest`, `status` and `history` as an operator runs them, on Postgres and the simulator."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.instance.dagster_compat import WorkerStatus
from extraction_pipeline.instance.run_launcher import WorkerCheckingRunLauncher
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.e2e.processes import wait_for
from extraction_pipeline_tests.pdfs import truncated_pdf
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

CLI = str(Path(sys.executable).parent / "extraction-pipeline")


@pytest.fixture
def cli_env(tmp_path: Path, pg_url: str, model_simulator: SimulatorControl) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "EXTRACTION_DATA_DIR": str(tmp_path / "data"),
        "EXTRACTION_PG_URL": pg_url,
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_ingest_a_folder_of_good_and_bad_pdfs_then_ask_status_and_history(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    folder = tmp_path / "drop"
    (folder / "sub").mkdir(parents=True)
    good = [make_invoice(i, seed=11) for i in (1, 2)]
    (folder / "a.pdf").write_bytes(invoice_pdf(good[0]))
    (folder / "sub" / "b.PDF").write_bytes(invoice_pdf(good[1]))
    (folder / "refused.pdf").write_bytes(invoice_pdf(make_invoice(3), extra_text="SIMULATE:REFUSE"))
    (folder / "broken.pdf").write_bytes(truncated_pdf())
    (folder / "notes.txt").write_text("not a pdf")

    ingest = cli(cli_env, "ingest", str(folder), "--json")

    assert ingest.returncode == 1, ingest.stderr[-2000:]
    summary = json.loads(ingest.stdout)
    assert summary["files"] == 4
    assert summary["extracted"] == 2 and summary["failed_count"] == 2
    assert summary["cost_usd"] > 0 and summary["input_tokens"] > 0
    reasons = " ".join(summary["failed"].values())
    assert "CorruptPdf" in reasons and "refused" in reasons
    assert "documents" in ingest.stderr  # the progress bar
    # Its own output only: no Dagster event lines, no library warnings (those go to a log file).
    noise = [line for line in ingest.stderr.splitlines() if "documents" not in line and line]
    assert noise == [], noise[:5]
    invoices = tmp_path / "data" / "tables" / "invoices.parquet"
    assert invoices.exists()

    status = cli(cli_env, "status", "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert status.stderr == ""
    report = json.loads(status.stdout)
    assert report["total"] == 4
    assert report["counts"]["extracted"] == 2 and report["counts"]["dead_letter"] == 2
    assert report["cost_usd"] == pytest.approx(summary["cost_usd"], rel=1e-6)
    # What status counts, the files hold: a row per document, a dead letter per dead letter.
    assert {letter["error_kind"] for letter in report["dead_letters"]} == {"CorruptPdf", "refused"}
    assert {letter["document_key"] for letter in report["dead_letters"]} == set(
        report["documents_by_state"]["dead_letter"]
    )
    documents = pq.read_table(tmp_path / "data" / "tables" / "documents.parquet").to_pylist()
    assert len(documents) == report["total"]
    assert sorted(row["status"] for row in documents) == [
        "extracted",
        "extracted",
        "failed",
        "failed",
    ]
    dead_letters = pq.read_table(tmp_path / "data" / "tables" / "dead_letters.parquet")
    assert dead_letters.num_rows == 2

    history = cli(cli_env, "history", "refused.pdf", "--json")
    assert history.returncode == 0, history.stderr[-2000:]
    attempts = json.loads(history.stdout)["attempts"]
    extraction = [a for a in attempts if a["asset"] == "extraction"]
    assert [a["outcome"] for a in extraction] == ["failed"]
    assert extraction[0]["error_kind"] == "refused" and extraction[0]["trigger"] == "ingest"

    again = cli(cli_env, "ingest", str(folder / "a.pdf"), "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["reused"] == 1  # same bytes: not paid again

    unknown = cli(cli_env, "history", "no-such-document.pdf")
    assert unknown.returncode == 2 and "no document matches" in unknown.stdout

    # Archiving is off by default, so the command asks for an age; all four are settled.
    no_age = cli(cli_env, "archive")
    assert no_age.returncode == 2 and "--after-days" in no_age.stderr
    archived = cli(cli_env, "archive", "--after-days", "0", "--json")
    assert archived.returncode == 0, archived.stderr[-2000:]
    assert len(json.loads(archived.stdout)["archived"]) == 4
    assert json.loads(cli(cli_env, "status", "--json").stdout)["total"] == 0
    kept = json.loads(cli(cli_env, "history", "refused.pdf", "--json").stdout)["attempts"]
    assert kept == attempts  # the history stays in the event log
    back = cli(cli_env, "ingest", str(folder / "a.pdf"), "--json")
    assert back.returncode == 0 and json.loads(back.stdout)["reused"] == 1  # not paid again
    assert json.loads(cli(cli_env, "status", "--json").stdout)["counts"]["extracted"] == 1


def test_the_run_of_a_killed_ingest_is_found_dead_by_run_monitoring(
    tmp_path: Path,
    cli_env: dict[str, str],
    model_simulator: SimulatorControl,
    instance: dg.DagsterInstance,
) -> None:
    """`ingest` runs in the CLI's own process; killed, its run would stay STARTED for the 2 h
    max runtime. The run names its host, so the project's launcher checks its pid."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for number in range(1, 9):
        (folder / f"{number}.pdf").write_bytes(invoice_pdf(make_invoice(number)))
    model_simulator.configure(latency_seconds=5)
    process = subprocess.Popen([CLI, "ingest", str(folder)], env=cli_env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: model_simulator.requests()["in_flight"] > 0, 120, "a model call")
        (run,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        launcher = WorkerCheckingRunLauncher()
        launcher.register_instance(instance)
        assert launcher.check_run_worker_health(run).status is WorkerStatus.RUNNING
    finally:
        process.kill()
        process.wait()
    assert launcher.check_run_worker_health(run).status is WorkerStatus.NOT_FOUND
