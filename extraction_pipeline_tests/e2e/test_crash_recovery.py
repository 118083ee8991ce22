"""Crash recovery with the shipped dagster.yaml (run retries, run monitoring and the `openai` pool
all on): after each crash every document ends extracted, once, with nothing stored asked again."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.conftest import storage_overrides
from extraction_pipeline_tests.e2e.deployment import (
    CLI,
    Deployment,
    assert_recovered,
    run_worker,
    table_rows,
    wait_for_run,
    wait_until_settled,
)
from extraction_pipeline_tests.e2e.processes import PROJECT_ROOT, free_port, stop, wait_for
from extraction_pipeline_tests.e2e.restartable_postgres import restartable_postgres

DOCUMENTS = 24
FAILURE = dg.DagsterRunStatus.FAILURE


def test_a_killed_run_worker_mid_range_is_retried_and_its_pool_slot_given_back(
    tmp_path: Path, pg_url: str, instance: dg.DagsterInstance, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(latency_seconds=1.0)
    deployment = Deployment(tmp_path, pg_url, model_simulator)
    with deployment.running(DOCUMENTS):
        run = wait_for_run(instance, model_simulator, done=6)
        kept, crashed_at = deployment.extracted_numbers(), time.time()
        run_worker(instance, run.run_id).send_signal(signal.SIGKILL)
        assert 0 < len(kept) < DOCUMENTS
        report_recovery("run worker killed", crashed_at, instance, deployment)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert_recovered(instance, deployment, DOCUMENTS, kept, crashed_at)


def test_a_killed_daemon_and_its_orphaned_run_recover_when_the_daemon_starts_again(
    tmp_path: Path, pg_url: str, instance: dg.DagsterInstance, model_simulator: SimulatorControl
) -> None:
    """As a machine crash: daemon, code server and run worker die at once, leaving the run
    STARTED; the next daemon's run monitoring finds its worker gone, and run retries finish it."""
    model_simulator.configure(latency_seconds=1.0)
    deployment = Deployment(tmp_path, pg_url, model_simulator)
    with deployment.running(DOCUMENTS):
        run = wait_for_run(instance, model_simulator, done=6)
        worker = run_worker(instance, run.run_id)
        code_server = worker.parent()
        assert deployment.daemon is not None and code_server is not None
        assert "grpc" in " ".join(code_server.cmdline())
        kept, crashed_at = deployment.extracted_numbers(), time.time()
        # As a crashed machine: daemon, code server and run worker die at once, and nobody is
        # left to mark the run failed.
        for process in (deployment.daemon, code_server, worker):
            process.send_signal(signal.SIGKILL)
        deployment.stop_daemon()
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        deployment.start_daemon()
        wait_for(
            lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
            timeout=60,
            what="run monitoring to find the dead worker",
        )
        report_recovery("machine crash, daemon started again", crashed_at, instance, deployment)
    assert_recovered(instance, deployment, DOCUMENTS, kept, crashed_at)


def test_ctrl_c_of_dev_mid_run_keeps_the_answers_in_flight_and_the_next_start_finishes(
    tmp_path: Path, model_simulator: SimulatorControl
) -> None:
    """Ctrl-C lets the calls in flight finish and stores them; started again, `dev` retries the
    interrupted run: every document extracted, each paid for exactly once."""
    model_simulator.configure(latency_seconds=2.0)
    deployment = Deployment(tmp_path, "", model_simulator)
    port = free_port()
    deployment.start_dev(port)
    try:
        deployment.drop_invoices(DOCUMENTS)
        wait_for(
            lambda: (
                sum(deployment.answered_documents().values()) >= 6
                and model_simulator.requests()["in_flight"] > 0
            ),
            timeout=240,
            what="a run with answers and calls in flight",
        )
        assert deployment.daemon is not None
        code = stop(deployment.daemon, signal.SIGINT, timeout=90)
        assert code == 0
        assert model_simulator.requests()["in_flight"] == 0
        paid = deployment.answered_documents()
        assert set(paid) == deployment.extracted_numbers()  # every answer paid for is stored
        assert len(paid) < DOCUMENTS
        deployment.start_dev(port)
        wait_for(
            lambda: len(table_rows(deployment.data_dir, "invoices")) == DOCUMENTS,
            timeout=240,
            what="every invoice in the table after the restart",
        )
        history = cli_json(deployment, "history", "invoice-001.pdf")
    finally:
        deployment.stop_daemon()
    answered = deployment.answered_documents()
    assert sorted(answered) == sorted(deployment.invoice_numbers.values())
    assert set(answered.values()) == {1}, "a document was paid for twice"
    rows = table_rows(deployment.data_dir, "documents")
    assert len(rows) == DOCUMENTS and {row["status"] for row in rows} == {"extracted"}
    runs = {a["run_id"] for a in history["attempts"] if a["asset"] == "extraction"}
    assert len(runs) >= 2, history  # the interrupted attempt and the one that finished it
    assert history["attempts"][-1]["outcome"] == "extracted"


def cli_json(deployment: Deployment, *args: str) -> dict:
    result = subprocess.run(
        [CLI, *args, "--json"],
        env={**os.environ, **deployment.env, "EXTRACTION_PG_URL": ""},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


def test_a_killed_code_server_loses_nothing(
    tmp_path: Path, pg_url: str, instance: dg.DagsterInstance, model_simulator: SimulatorControl
) -> None:
    """The run worker outlives its code server; the daemon starts a new code server."""
    model_simulator.configure(latency_seconds=1.0)
    deployment = Deployment(tmp_path, pg_url, model_simulator)
    with deployment.running(DOCUMENTS):
        run = wait_for_run(instance, model_simulator, done=6)
        worker = run_worker(instance, run.run_id)
        code_server = worker.parent()
        assert code_server is not None and "grpc" in " ".join(code_server.cmdline())
        kept, crashed_at = deployment.extracted_numbers(), time.time()
        code_server.send_signal(signal.SIGKILL)
        report_recovery("code server killed", crashed_at, instance, deployment)
        deployment.drop_invoices(DOCUMENTS + 2)  # and the inbox keeps working
        wait_until_settled(instance, deployment, DOCUMENTS + 2)
    assert_recovered(instance, deployment, DOCUMENTS + 2, kept, crashed_at, run_crashed=False)
    assert set(deployment.answered_documents().values()) == {1}


@pytest.mark.parametrize("tcp", [False, True], ids=["embedded-socket", "external-tcp"])
def test_postgres_restarted_mid_run_loses_nothing(
    tmp_path: Path, model_simulator: SimulatorControl, tcp: bool
) -> None:
    model_simulator.configure(latency_seconds=1.0)
    with (
        restartable_postgres(tmp_path / "pgdata", tcp=tcp) as postgres,
        dg.instance_for_test(overrides=storage_overrides(postgres.url)) as instance,
    ):
        deployment = Deployment(tmp_path, postgres.url, model_simulator)
        with deployment.running(DOCUMENTS):
            wait_for_run(instance, model_simulator, done=6)
            kept, crashed_at = deployment.extracted_numbers(), time.time()
            postgres.stop()
            time.sleep(3)
            postgres.start()
            report_recovery(
                f"postgres restarted ({'tcp' if tcp else 'socket'})",
                crashed_at,
                instance,
                deployment,
            )
        crashed = bool(instance.get_runs(dg.RunsFilter(job_name="intake_job", statuses=[FAILURE])))
        assert_recovered(instance, deployment, DOCUMENTS, kept, crashed_at, run_crashed=crashed)


def report_recovery(
    what: str, crashed_at: float, instance: dg.DagsterInstance, deployment: Deployment
) -> None:
    """Wait until settled, and say how long after the crash (README "Reliability" quotes it)."""
    wait_until_settled(instance, deployment, DOCUMENTS)
    print(f"recovery: {what}: every document settled {time.time() - crashed_at:.1f} s after it")


def test_a_run_terminated_from_the_ui_keeps_its_answers_in_flight_and_is_not_retried(
    tmp_path: Path, pg_url: str, instance: dg.DagsterInstance, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(latency_seconds=2.0)
    deployment = Deployment(tmp_path, pg_url, model_simulator)
    with deployment.running(DOCUMENTS):
        run = wait_for_run(instance, model_simulator, done=6)
        assert instance.run_launcher.terminate(run.run_id)  # what the UI's Terminate calls
        wait_for(
            lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED,
            timeout=60,
            what="the run to be canceled",
        )
        assert model_simulator.requests()["in_flight"] == 0
        paid = deployment.answered_documents()
        time.sleep(12)  # a run retry, were there one, would have been launched by now
    assert set(paid) == deployment.extracted_numbers()  # every answer paid for is stored
    assert len(paid) < DOCUMENTS and set(paid.values()) == {1}
    assert [r.run_id for r in instance.get_runs(dg.RunsFilter(job_name="intake_job"))] == [
        run.run_id
    ]
