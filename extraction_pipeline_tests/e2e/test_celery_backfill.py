"""A backfill spread over Celery workers ends as the single-machine run of the same documents does:
the same tables, outcomes and history, and nothing paid twice, with one worker killed mid-run.

The single-machine run is `extraction-pipeline ingest FOLDER` (the scripted twin of a UI
backfill) on a local data dir, a database and a model simulator of its own. The distributed run is
a deployment as a team runs it: the data dir on a real S3-compatible server (SeaweedFS), Dagster's
storage in the shared Postgres, two Celery workers on the real broker, the daemon and the
webserver. The same files are registered and made partitions, and a backfill of both document
assets is launched through the webserver's GraphQL as the UI's "Materialize" dialog launches it;
EXTRACTION_DOCUMENTS_PER_RUN=4 makes it ranged runs that the workers share.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from extraction_pipeline.cli.ingest import plan_ingest
from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.identity import document_key
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.core.tables.layout import TABLE_NAMES, table_path
from extraction_pipeline.defs.run_sensors import run_outcomes
from extraction_pipeline.instance.document_runs import run_document_keys
from extraction_pipeline.instance.facts import UNFINISHED
from extraction_pipeline.instance.history import Attempt, document_history
from extraction_pipeline.instance.instance_yaml import instance_yaml
from extraction_pipeline.instance.names import DOCUMENTS_PARTITIONS_NAME, PARENT_RUN_TAG
from extraction_pipeline.instance.object_server import ObjectServer
from extraction_pipeline.instance.postgres import drop_database, ensure_database
from extraction_pipeline.instance.stores import open_store
from extraction_pipeline.simulator import SimulatorControl, SimulatorServer
from extraction_pipeline_tests.browser.ui import BACKFILL_TAG, TERMINAL_BACKFILL_STATUSES
from extraction_pipeline_tests.conftest import storage_overrides
from extraction_pipeline_tests.e2e.deployment import answered_numbers
from extraction_pipeline_tests.e2e.processes import (
    CLI,
    PROJECT_ROOT,
    answers,
    free_port,
    graphql,
    processes_mentioning,
    start,
    stop,
    wait_for,
)
from extraction_pipeline_tests.pdfs import truncated_pdf
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

T = TypeVar("T")
BIN = Path(sys.executable).parent
WORKERS = ("worker1", "worker2")
REPLACEMENT = "worker3"  # started when a worker is killed, as a supervisor restarts one
RECEIVED = re.compile(r"Task execute_job\[([0-9a-f-]+)\] received")
SUCCEEDED = re.compile(r"Task execute_job\[([0-9a-f-]+)\] succeeded")
INVOICES = 22
# The model refuses this invoice (the simulator's marker): a permanent failure. It opens the second
# run of the backfill, and that run is the one killed, once the refusal is recorded: a run killed
# after it settled a document for good, with others in flight.
REFUSED = 5
PER_RUN = 4
MAX_CONCURRENCY = 2  # a run's documents come back in turns, so the kill lands between outcomes
LATENCY = 1.0  # seconds the simulated model takes per answer in the distributed run
KILL_MARGIN = 0.2  # seconds a call in flight must still have to go when its worker is killed
NEVER = "0 0 1 1 *"  # the schedules would take failed documents again behind the backfill's back
# Columns that say when, where and how long, not what: they differ between any two runs.
RUN_COLUMNS = {"run_id", "extracted_at", "latency_seconds"}
# The retry of the killed run serves what the killed run had stored from the store: that latest
# outcome is a cache hit and costs 0 (`cost_usd_total`, every attempt's cost, stays compared).
REUSE_COLUMNS = {"cache_hit", "cost_usd"}


@dataclass(frozen=True)
class Documents:
    """The files of both runs, by document key: the invoice number of each the model reads."""

    folder: Path
    numbers: dict[str, str]
    refused: str
    corrupt: str

    def numbers_of(self, keys: Iterable[str]) -> dict[str, str]:
        return {key: self.numbers[key] for key in keys if key in self.numbers}


def write_documents(folder: Path) -> Documents:
    """The invoices, one of them refused by the model, and a corrupt PDF."""
    folder.mkdir()

    def write(name: str, data: bytes) -> str:
        (folder / name).write_bytes(data)
        return document_key(name, hashlib.sha256(data).hexdigest())

    numbers = {}
    for index in range(1, INVOICES + 1):
        invoice = make_invoice(index, seed=13)
        marker = "SIMULATE:REFUSE" if index == REFUSED else ""
        key = write(f"invoice-{index:03d}.pdf", invoice_pdf(invoice, extra_text=marker))
        numbers[key] = invoice.invoice_number
    corrupt = write("scan-corrupt.pdf", truncated_pdf())
    return Documents(folder, numbers, refused=list(numbers)[REFUSED - 1], corrupt=corrupt)


@pytest.fixture
def reference_pg_url(pg_server_url: str) -> Iterator[str]:
    """A second fresh database: the single-machine run's own Dagster storage."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield ensure_database(pg_server_url, name)
    drop_database(pg_server_url, name)


def ingest(env: dict[str, str], folder: Path) -> dict[str, Any]:
    """`extraction-pipeline ingest FOLDER --json`, given only `env` of the project's variables,
    at the lowest CPU priority: it takes what the deployment leaves idle (waiting for the model,
    for monitoring and for the daemon's ticks), so the two runs take little longer than one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EXTRACTION_", "AWS_"))}
    process = subprocess.Popen(
        [CLI, "ingest", str(folder), "--json"],
        env={**base, **env},
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.setpriority(os.PRIO_PROCESS, process.pid, 19)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]  # 1: some documents failed
    return dict(json.loads(stdout))


ASSET_NODE = '{ assetNodeOrError(assetKey: {path: ["extraction"]}) { __typename } }'
LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""
BACKFILL = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill {
      status
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted numPartitionsInProgress
            numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
  }
}"""


def launch_backfill(url: str, keys: Sequence[str]) -> str:
    """A backfill of both document assets over `keys`, launched as the UI's dialog does."""
    wait_for(
        lambda: (
            answers(f"{url}/server_info")
            and graphql(url, ASSET_NODE)["assetNodeOrError"]["__typename"] == "AssetNode"
        ),
        120,
        "the webserver, with the code location loaded",
    )
    params = {
        "assetSelection": [{"path": ["source_document"]}, {"path": ["extraction"]}],
        "partitionNames": list(keys),
        "fromFailure": False,
        "tags": [],
    }
    launched = graphql(url, LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return str(launched["backfillId"])


def backfill_state(url: str, backfill_id: str) -> dict[str, Any]:
    return dict(graphql(url, BACKFILL, id=backfill_id)["partitionBackfillOrError"])


def settled_in(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """The documents whose outcome the run recorded."""
    failures, extracted = run_outcomes(instance, run_id)
    return set(failures) | extracted


def fit_to_kill(
    instance: dg.DagsterInstance, simulator: SimulatorControl, documents: Documents
) -> dg.DagsterRun | None:
    """The started run over the refused document, at a moment fit to kill its worker mid-run:
    it has recorded the refusal, it has model calls in flight, each with KILL_MARGIN to go at
    least, and every answer the model gave it is recorded (a worker killed in between would keep
    the stored answer and lose the record: a narrower race than this test is about)."""
    keys = instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
    started = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    run = next((run for run in started if documents.refused in run_document_keys(run, keys)), None)
    if run is None:
        return None
    requests = model_requests(simulator, documents.numbers_of(run_document_keys(run, keys)))
    settled, now = settled_in(instance, run.run_id), time.time()
    in_flight = [r for _, r in requests if r["finished_at"] is None]
    answered = {key for key, r in requests if r["finished_at"] is not None}
    fresh = all(now - r["started_at"] < LATENCY - KILL_MARGIN for r in in_flight)
    fit = documents.refused in settled and in_flight and fresh and answered <= settled
    return run if fit else None


def model_requests(
    simulator: SimulatorControl, numbers: Mapping[str, str]
) -> list[tuple[str, dict[str, Any]]]:
    """The simulator's requests about the documents of `numbers` (key -> invoice number)."""
    found = []
    for request in simulator.requests()["requests"]:
        keys = [k for k, n in numbers.items() if n in request["document_excerpt"]]
        found += [(key, request) for key in keys]
    return found


def wait_for_value(find: Callable[[], T | None], timeout: float, what: str) -> T:
    """What `find` finds first, looking every 50 ms (a moment fit to kill is short)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := find()) is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def read_tables(store: ObjectStore) -> dict[str, list[dict[str, Any]]]:
    return {
        name: pq.read_table(io.BytesIO(store.get(table_path(name)))).to_pylist()
        for name in TABLE_NAMES
    }


def comparable(
    rows: list[dict[str, Any]], differing: Mapping[str, set[str]]
) -> list[dict[str, Any]]:
    """`rows` in order, without RUN_COLUMNS nor the columns `differing` names per document."""

    def dropped(row: dict[str, Any]) -> set[str]:
        return RUN_COLUMNS | differing.get(row["document_key"], set())

    kept = [{k: v for k, v in row.items() if k not in dropped(row)} for row in rows]
    return sorted(kept, key=lambda row: (row["document_key"], row.get("line_number", 0)))


def settled_as(attempt: Attempt) -> tuple[Any, ...]:
    """What an attempt settled, whatever its run (id, job, and status: which documents shared
    it), trigger and time, and whether the store served it. For a document its run recorded
    nothing about, the error is the step's, which lists the run's other failures: it too depends
    on how the documents were grouped into runs."""
    error = attempt.error if attempt.outcome != "no_outcome" else None
    return (
        attempt.asset,
        attempt.outcome,
        attempt.step_attempt,
        attempt.error_kind,
        error,
        attempt.model,
        attempt.input_tokens,
        attempt.output_tokens,
        attempt.cost_usd,
    )


def paid(attempts: list[Attempt]) -> int:
    """Model answers recorded as paid for (not served from the store)."""
    return sum(1 for a in attempts if a.input_tokens is not None and not a.cache_hit)


@dataclass(frozen=True)
class Kill:
    """The run killed with its worker, its documents, those it had settled, those in flight."""

    run: dg.DagsterRun
    worker: str
    documents: set[str]
    settled: set[str]
    in_flight: set[str]


@dataclass
class Deployment:
    """The Celery workers and the webserver of the distributed run, and its daemon once started."""

    env: dict[str, str]
    logs: Path
    url: str = field(default_factory=lambda: f"http://127.0.0.1:{free_port()}")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str]) -> None:
        self.processes[name] = start(command, self.env, self.logs / f"{name}.log")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def kill_worker_running(self, run: dg.DagsterRun) -> str:
        """SIGKILL to the worker that received the run's task, and to its pool."""
        task = run.tags[DAGSTER_CELERY_TASK_ID_TAG]
        worker = next(name for name in WORKERS if task in self.log(name))
        os.killpg(self.processes[worker].pid, signal.SIGKILL)
        return worker

    def start_worker(self, name: str) -> None:
        """A Celery worker that takes one run at a time."""
        self.start(name, [
            sys.executable, "-m", "celery", "-A", "extraction_pipeline.instance.celery_app",
            "worker", "-Q", self.env["EXTRACTION_CELERY_QUEUE"], "-n", f"{name}@%h",
            "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ])  # fmt: skip


@contextlib.contextmanager
def celery_deployment(env: dict[str, str], logs: Path) -> Iterator[Deployment]:
    """Two Celery workers and the webserver; all stopped after."""
    deployment = Deployment(env, logs)
    for name in WORKERS:
        deployment.start_worker(name)
    host, port = deployment.url.removeprefix("http://").split(":")
    webserver = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", host, "-p", port]
    deployment.start("webserver", webserver)
    try:
        yield deployment
    finally:
        # SIGTERM to all at once (each takes its time to stop), then wait for each.
        processes = deployment.processes.values()
        with ThreadPoolExecutor(len(processes)) as pool:
            list(pool.map(lambda process: stop(process, signal.SIGTERM, 60), processes))


def settings_env(tmp_path: Path) -> dict[str, str]:
    """The settings both runs share."""
    (tmp_path / "inbox").mkdir()
    return {
        "EXTRACTION_INBOX": str(tmp_path / "inbox"),  # empty: the inbox sensor takes nothing
        "EXTRACTION_DOCUMENTS_PER_RUN": str(PER_RUN),
        "EXTRACTION_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        "EXTRACTION_NIGHTLY_CRON": NEVER,
        "EXTRACTION_RETRY_CRON": NEVER,
        "OPENAI_API_KEY": TEST_API_KEY,
    }


def test_a_backfill_over_celery_workers_ends_as_the_single_machine_run_with_a_worker_killed(
    tmp_path: Path,
    pg_url: str,
    reference_pg_url: str,
    object_server: ObjectServer,
    s3_data_url: str,
    model_simulator: SimulatorControl,
    broker_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    documents = write_documents(tmp_path / "documents")
    common, home, reference_data = settings_env(tmp_path), tmp_path / "home", tmp_path / "data"
    env = {
        **common,
        "DAGSTER_HOME": str(home),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_DATA_DIR": s3_data_url,
        "EXTRACTION_CELERY_BROKER": broker_url,
        "EXTRACTION_CELERY_QUEUE": f"extraction-test-{uuid.uuid4().hex[:8]}",
        "EXTRACTION_RUN_SLOTS": "2",
        "OPENAI_BASE_URL": model_simulator.base_url,
        **object_server.client_env(),
    }
    home.mkdir()
    (home / "dagster.yaml").write_text(
        instance_yaml(INSTANCE_TEMPLATE.read_text(), Settings.from_env(env))
    )
    model_simulator.configure(latency_seconds=LATENCY)
    # The single-machine run goes at the same time, with a model simulator of its own (its calls
    # are counted apart); `ingest` writes the shipped dagster.yaml into its DAGSTER_HOME itself.
    with SimulatorServer() as reference_model, ThreadPoolExecutor(1) as pool:
        reference_env = {
            **common,
            "DAGSTER_HOME": str(tmp_path / "reference_home"),
            "EXTRACTION_PG_URL": reference_pg_url,
            "EXTRACTION_DATA_DIR": str(reference_data),
            "OPENAI_BASE_URL": reference_model.base_url,
        }
        reference = pool.submit(ingest, reference_env, documents.folder)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with (
            celery_deployment(env, tmp_path) as deployment,
            dg.DagsterInstance.from_config(str(home)) as instance,
        ):
            # Registered and made partitions as `ingest` does; the backfill runs them.
            files = sorted(documents.folder.iterdir())
            plan_ingest(instance, Settings.from_env(env), files, {})
            keys = instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
            assert sorted(keys) == sorted([*documents.numbers, documents.corrupt])
            backfill_id = launch_backfill(deployment.url, keys)
            # Started after the launch, so that its first backfill tick (then one every 30 s)
            # takes the backfill up at once.
            deployment.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])
            killed_run = wait_for_value(
                lambda: fit_to_kill(instance, model_simulator, documents),
                120,
                "the run over the refused document, part-way",
            )
            worker = deployment.kill_worker_running(killed_run)
            deployment.start_worker(REPLACEMENT)

            def finished() -> bool:
                status = backfill_state(deployment.url, backfill_id)["status"]
                unfinished = instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))
                return status in TERMINAL_BACKFILL_STATUSES and not unfinished

            wait_for(finished, 240, f"backfill {backfill_id} to finish", interval=1)
            backfill = backfill_state(deployment.url, backfill_id)
            runs = instance.get_runs(dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
            histories = {key: document_history(instance, key) for key in keys}
            killed_keys = set(run_document_keys(killed_run, keys))
            settled = settled_in(instance, killed_run.run_id)
            # The calls in flight when the worker died were answered (and billed) after it.
            requests = model_requests(model_simulator, documents.numbers_of(killed_keys))
            lost = {key for key, request in requests if request["abandoned"]}
            kill = Kill(killed_run, worker, killed_keys, settled, lost)
        summary = reference.result()
        reference_calls = answered_numbers(
            reference_model.control(), set(documents.numbers.values())
        )
    with dg.instance_for_test(overrides=storage_overrides(reference_pg_url)) as reference_instance:
        reference_histories = {key: document_history(reference_instance, key) for key in keys}

    assert summary["files"] == len(keys)
    assert summary["extracted"] == INVOICES - 1
    assert {k: r.split(": ")[1] for k, r in summary["failed"].items()} == {
        documents.refused: "refused",
        documents.corrupt: "CorruptPdf",
    }
    assert_runs_on_both_workers(deployment, kill)
    assert_backfill(backfill, runs, keys, kill)
    calls = answered_numbers(model_simulator, set(documents.numbers.values()))
    repaid = repaid_documents(calls, reference_calls, documents, kill)
    store = open_store(s3_data_url, {"EXTRACTION_PG_URL": pg_url})
    assert_same_tables(read_tables(store), read_tables(open_store(reference_data)), kill, repaid)
    assert_same_history(histories, reference_histories, {run.run_id for run in runs}, kill, repaid)
    leftovers = [p for p in processes_mentioning(str(tmp_path)) if p.pid != os.getpid()]
    assert leftovers == [], [p.cmdline() for p in leftovers]
    assert not repaid, "paid twice for documents the killed run had settled"


def assert_runs_on_both_workers(deployment: Deployment, kill: Kill) -> None:
    """Runs landed on both workers; the killed run's task went back to the broker and on to a
    live worker (which found its run started elsewhere)."""
    task = kill.run.tags[DAGSTER_CELERY_TASK_ID_TAG]
    surviving = next(name for name in WORKERS if name != kill.worker)
    assert task in RECEIVED.findall(deployment.log(kill.worker))
    assert any(task in RECEIVED.findall(deployment.log(n)) for n in (surviving, REPLACEMENT))
    assert SUCCEEDED.findall(deployment.log(surviving))


def assert_backfill(
    backfill: dict[str, Any], runs: Sequence[dg.DagsterRun], keys: Sequence[str], kill: Kill
) -> None:
    """Ranged runs of at most PER_RUN documents, each document in exactly one; the killed run
    failed (run monitoring found its worker gone) and its run retry, which Dagster tags with the
    backfill too, took the same documents. Dagster counts each document once, by its outcome,
    and calls the backfill failed because two documents failed for good."""
    first_runs = [run for run in runs if PARENT_RUN_TAG not in run.tags]
    covered = [key for run in first_runs for key in run_document_keys(run, keys)]
    assert sorted(covered) == sorted(keys)
    assert max(len(run_document_keys(run, keys)) for run in runs) == PER_RUN
    (retry,) = [run for run in runs if PARENT_RUN_TAG in run.tags]
    assert retry.tags[PARENT_RUN_TAG] == kill.run.run_id
    assert set(run_document_keys(retry, keys)) == kill.documents
    statuses = {run.run_id: run.status for run in runs}
    assert statuses[kill.run.run_id] == dg.DagsterRunStatus.FAILURE
    assert backfill["status"] == "COMPLETED_FAILED"
    counts = {
        status["assetKey"]["path"][-1]: (
            status["numPartitionsTargeted"],
            status["numPartitionsMaterialized"],
            status["numPartitionsFailed"],
            status["numPartitionsInProgress"],
        )
        for status in backfill["assetBackfillData"]["assetBackfillStatuses"]
    }
    assert counts == {
        "source_document": (len(keys), len(keys) - 1, 1, 0),
        "extraction": (len(keys), len(keys) - 2, 2, 0),
    }


def repaid_documents(
    calls: Counter[str], reference_calls: Counter[str], documents: Documents, kill: Kill
) -> set[str]:
    """The documents the killed run had settled and the model was paid for again.

    Otherwise paid for is what the single-machine run paid for, plus the calls in flight on the
    killed worker: answered and billed after it died, the answers lost with it."""
    assert sorted(reference_calls.values()) == [1] * INVOICES
    extra = {key: calls[n] - reference_calls[n] for key, n in documents.numbers.items()}
    assert set(extra.values()) <= {0, 1}
    asked_again = {key for key, n in extra.items() if n}
    repaid = asked_again & kill.settled
    assert kill.in_flight and kill.in_flight <= kill.documents - kill.settled
    assert asked_again - repaid == kill.in_flight
    return repaid


def assert_same_tables(
    tables: dict[str, list[dict[str, Any]]],
    reference: dict[str, list[dict[str, Any]]],
    kill: Kill,
    repaid: set[str],
) -> None:
    """The same rows, row for row, but for when, where and how long, and for the reuses by the
    killed run's retry. A document's cost_usd_total counts every answer paid for."""
    differing = {key: REUSE_COLUMNS for key in kill.settled}
    differing |= {key: REUSE_COLUMNS | {"cost_usd_total"} for key in repaid}
    for name in TABLE_NAMES:
        assert comparable(tables[name], differing) == comparable(reference[name], differing), name
    reused = {row["document_key"] for row in tables["documents"] if row["cache_hit"]}
    assert reused <= kill.settled
    totals = {row["document_key"]: row["cost_usd_total"] for row in tables["documents"]}
    reference_totals = {
        row["document_key"]: row["cost_usd_total"] for row in reference["documents"]
    }
    for key in repaid:
        assert totals[key] == pytest.approx(2 * reference_totals[key]), key


def assert_same_history(
    histories: dict[str, list[Attempt]],
    reference: dict[str, list[Attempt]],
    backfill_runs: set[str],
    kill: Kill,
    repaid: set[str],
) -> None:
    """Per document, what each attempt settled is what the single-machine run's attempts
    settled; the killed run adds one extraction attempt to each of its documents: the outcome it
    recorded before the kill, or none. The answers lost with the worker were never recorded."""
    for key, history in histories.items():
        assert {a.run_id for a in history} <= backfill_runs, key
        by_killed = [a for a in history if a.run_id == kill.run.run_id]
        others = [a for a in history if a.run_id != kill.run.run_id]
        expected = [settled_as(a) for a in reference[key]]
        if key not in kill.documents:
            assert [settled_as(a) for a in history] == expected, key
            assert [a.cache_hit for a in history] == [a.cache_hit for a in reference[key]], key
            continue
        (extraction,) = [a for a in by_killed if a.asset == "extraction"]
        if key in kill.settled:
            assert [settled_as(a) for a in by_killed] == expected, key
        else:
            assert (extraction.outcome, extraction.error_kind) == ("no_outcome", "run_failed")
            assert [settled_as(a) for a in others] == expected, key
        assert paid(history) - paid(reference[key]) == (1 if key in repaid else 0), key
