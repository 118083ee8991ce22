"""The shipped deployment (dagster.yaml, a real dagster-daemon on Postgres) under the simulator's
standard fault mix: 20% 429 with Retry-After, 10% 500, 5% hangs past the client timeout, 3%
invalid JSON and 2% refusals, each request drawn independently.

The agent's own retries are off (EXTRACTION_MAX_RETRIES=0), so every fault reaches the pipeline:
step retries take the transient failures of a run, the retry schedule (every minute here) the
documents a whole run could not extract, and refusals are dead letters. After it settles, every
document is in exactly one terminal state, has one row in documents.parquet, was paid for once
if extracted and never if not, and each failed attempt is on record in `history`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.operations.lifecycle import RetryPolicy
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.facts import UNFINISHED
from extraction_pipeline.instance.history import document_history
from extraction_pipeline.instance.status import status_report
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import drop
from extraction_pipeline_tests.e2e.processes import dagster_home, start, stop, wait_for
from extraction_pipeline_tests.e2e.test_daemon_intake import DAGSTER_DAEMON, read_table
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

CLI = str(Path(sys.executable).parent / "extraction-pipeline")
INVOICES = 24
# Draws depend on the seed and the documents only; with this seed every kind of the mix occurs
# and some document needs the retry schedule after a run's step retries could not extract it.
FAULT_SEED = 7
TERMINAL = ("extracted", "needs_review", "dead_letter")
TABLE_STATUS = {"extracted": "extracted", "needs_review": "needs_review", "dead_letter": "failed"}
# Faults that fail an extraction attempt at once when the agent does not retry; invalid JSON
# gets a repair round first (and fails the attempt only when the repair is invalid too).
FAILING_FAULTS = ("429", "500", "hang", "refuse")


def drop_documents(inbox: Path) -> list[str]:
    names = []
    for number in range(1, INVOICES + 1):
        names.append(f"invoice-{number:03d}.pdf")
        drop(inbox, names[-1], invoice_pdf(make_invoice(number)))
    # One refusal for certain, so the dead-letter path is always taken.
    names.append("refused.pdf")
    drop(inbox, names[-1], invoice_pdf(make_invoice(99), extra_text="SIMULATE:REFUSE"))
    return names


@pytest.mark.timeout(420)
def test_every_document_settles_once_and_is_paid_once_under_the_fault_mix(
    tmp_path: Path, pg_url: str, instance: dg.DagsterInstance, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(fault_mix="standard", seed=FAULT_SEED, latency_seconds=0.2)
    inbox, data_dir = tmp_path / "inbox", tmp_path / "data"
    inbox.mkdir()
    env = {
        "DAGSTER_HOME": str(dagster_home(tmp_path)),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_DATA_DIR": str(data_dir),
        "EXTRACTION_INBOX": str(inbox),
        "EXTRACTION_SENSOR_INTERVAL": "1",
        "EXTRACTION_TABLES_INTERVAL": "2",
        "EXTRACTION_SETTLE_SECONDS": "0.5",
        "EXTRACTION_TIMEOUT": "3",
        "EXTRACTION_MAX_RETRIES": "0",
        "EXTRACTION_STEP_RETRY_DELAY": "1",
        "EXTRACTION_RETRY_CRON": "* * * * *",
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
    }
    store = LocalObjectStore(data_dir)
    policy = RetryPolicy(max_attempts=3)
    names = drop_documents(inbox)
    daemon = start([DAGSTER_DAEMON, "run", "-w", "workspace.yaml"], env, tmp_path / "daemon.log")

    def settled() -> bool:
        report = status_report(instance, store, policy)
        rows = read_table(data_dir, "documents")
        dead = {letter.document_key for letter in report.dead_letters}
        return (
            report.total == len(names)
            and sum(report.counts[state] for state in TERMINAL) == len(names)
            and not instance.get_run_ids(dg.RunsFilter(statuses=UNFINISHED))
            and len(rows) == len(names)
            and dead == set(report.documents_by_state["dead_letter"])
        )

    try:
        wait_for(settled, timeout=360, what="every document in a terminal state", interval=2)
    finally:
        stop(daemon)

    report = status_report(instance, store, policy)
    state_of = {key: s for s, keys in report.documents_by_state.items() for key in keys}
    keys = instance.get_dynamic_partitions("documents")
    assert len(keys) == len(set(keys)) == len(names)  # none lost, none twice
    assert set(state_of.values()) <= set(TERMINAL)

    rows = read_table(data_dir, "documents")
    assert sorted(row["document_key"] for row in rows) == sorted(keys)
    for row in rows:
        assert row["status"] == TABLE_STATUS[state_of[row["document_key"]]], row
    name_of = {row["document_key"]: row["file_name"] for row in rows}
    assert sorted(name_of.values()) == sorted(names)

    simulated = model_simulator.requests()
    assert set(simulated["by_fault"]) == {"429", "500", "hang", "invalid_json", "refuse"}
    assert simulated["paid_twice"] == []
    ledger = {entry["document_name"]: entry for entry in simulated["documents"]}
    for key, state in state_of.items():
        paid = ledger[name_of[key]]["usable"]
        assert paid == (0 if state == "dead_letter" else 1), (name_of[key], state, paid)
    assert state_of[_key(name_of, "refused.pdf")] == "dead_letter"
    # Every document ever announced as a dead letter (webhook) is one.
    announced = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("dead_letters")), limit=1000
    ).records
    for record in announced:
        for key in record.asset_materialization.metadata["new_dead_letters"].value:  # type: ignore[union-attr]
            assert state_of[key] == "dead_letter", (name_of[key], state_of[key])

    retried_by_schedule = 0
    for key in keys:
        attempts = [a for a in document_history(instance, key) if a.asset == "extraction"]
        failed = [a for a in attempts if a.outcome == "failed"]
        faults = ledger[name_of[key]]["faults"]
        failing = sum(faults.get(kind, 0) for kind in FAILING_FAULTS)
        # Every failed request failed its attempt; an invalid answer failed one only when its
        # repair was invalid too.
        assert failing <= len(failed) <= failing + faults.get("invalid_json", 0) // 2, (
            name_of[key],
            faults,
            [(a.outcome, a.error_kind) for a in attempts],
        )
        assert all(a.error_kind for a in failed)
        retried_by_schedule += any(a.trigger == "retry_failed" for a in attempts)
    assert retried_by_schedule >= 1

    # The operator's view of one document that failed before it was extracted.
    recovered = next(
        name_of[key]
        for key in keys
        if state_of[key] != "dead_letter" and ledger[name_of[key]]["faults"].get("500")
    )
    shown = subprocess.run(
        [CLI, "history", recovered, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    outcomes = [
        a["outcome"] for a in json.loads(shown.stdout)["attempts"] if a["asset"] == "extraction"
    ]
    assert "failed" in outcomes and outcomes[-1] in ("extracted", "needs_review")


def _key(name_of: dict[str, str], name: str) -> str:
    return next(key for key, file_name in name_of.items() if file_name == name)
