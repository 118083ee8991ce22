"""Soak: N invoices dropped into a running deployment while the model misbehaves, until every
document has settled; then count what went wrong. Every count must be 0.

The model simulator runs the standard fault mix (each request independently: 20% 429 with
Retry-After, 10% 500, 5% hangs past the client timeout, 3% invalid JSON, 2% refusals). The
deployment is the product's (dagster.yaml as shipped, `dagster-daemon run`, product defaults)
except the client timeout (EXTRACTION_TIMEOUT, so a hang costs seconds, not minutes) and the
retry schedule, every minute instead of every hour. Settled: every document extracted, needing
review or a dead letter (recorded), no run unfinished, documents.parquet one row per document.

- lost: dropped documents without a partition or without a row in documents.parquet
- duplicated: partitions nobody dropped, and rows beyond one per document
- paid twice: documents the model answered usably (and billed) more than once
- paid, not kept: documents answered usably whose result is not extracted (paid and lost)
- stuck: documents not in a terminal state when the soak stops waiting
- false dead letters: documents announced as dead letters (webhook, `dead_letters` events)
  that ended extracted

    .venv/bin/python benchmarks/soak.py            # N=300, latency 1.0 s
    .venv/bin/python benchmarks/soak.py --quick    # N=20, short intervals
    .venv/bin/python benchmarks/soak.py --crash run-worker    # and SIGKILL a run worker once
    .venv/bin/python benchmarks/soak.py --crash code-server   # or the code server
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import dagster as dg
import psutil
from common import (
    describe_server,
    drop_files,
    exit_on_sigterm,
    fresh_database,
    make_corpus,
    pg_server,
    print_table,
    scratch_dir,
    start_simulator,
    write_results,
)
from daemon import PRODUCT, Knobs, RunningPipeline, read_table

from extraction_pipeline.core.documents.identity import document_key
from extraction_pipeline.core.documents.pdf import sha256_hex
from extraction_pipeline.core.operations.lifecycle import RetryPolicy
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.facts import UNFINISHED
from extraction_pipeline.instance.status import StatusReport, status_report
from extraction_pipeline.simulator.faults import describe_mix

TERMINAL = ("extracted", "needs_review", "dead_letter")
EXTRACTED = ("extracted", "needs_review")
INVARIANTS = ("lost", "duplicated", "paid_twice", "paid_not_kept", "stuck", "false_dead_letters")
DEAD_LETTERS = dg.AssetKey("dead_letters")


def _extracting_worker(pipeline: RunningPipeline) -> psutil.Process | None:
    """The process of a started intake run, as its RUN_START event records it."""
    instance = pipeline.instance
    started = dg.RunsFilter(job_name="intake_job", statuses=[dg.DagsterRunStatus.STARTED])
    for run in instance.get_runs(started, limit=1):
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START):
            if entry.dagster_event is not None and entry.dagster_event.pid is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    return psutil.Process(entry.dagster_event.pid)
    return None


def _kill_run_worker(pipeline: RunningPipeline) -> bool:
    worker = _extracting_worker(pipeline)
    if worker is None:
        return False
    print(f"  crash: SIGKILL of run worker {worker.pid}")
    worker.kill()
    return True


def _kill_code_server(pipeline: RunningPipeline) -> bool:
    worker = _extracting_worker(pipeline)
    server = worker.parent() if worker is not None else None
    if server is None or "grpc" not in " ".join(server.cmdline()):
        return False
    print(f"  crash: SIGKILL of code server {server.pid} (its run worker {worker.pid} goes on)")
    server.kill()
    return True


# Crash injection: name -> what to do to the running pipeline, once `--crash-after` seconds into
# the soak and a run is extracting; returns False while there is nothing to crash yet.
CRASHES: dict[str, Callable[[RunningPipeline], bool]] = {
    "run-worker": _kill_run_worker,
    "code-server": _kill_code_server,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=20 and 1 s intervals")
    parser.add_argument("-n", "--documents", type=int, default=None, help="default 300")
    parser.add_argument("--latency", type=float, default=None, help="default 1.0 (0.2 quick)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault draws")
    parser.add_argument("--client-timeout", type=float, default=None, help="default 10 (3 quick)")
    parser.add_argument("--max-concurrency", type=int, default=PRODUCT.extraction.max_concurrency)
    parser.add_argument(
        "--agent-retries",
        type=int,
        default=PRODUCT.extraction.max_retries,
        help="EXTRACTION_MAX_RETRIES; 0 sends every fault to step retries and the schedule",
    )
    parser.add_argument("--retry-cron", default="* * * * *")
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--sensor-interval", type=int, default=None)
    parser.add_argument("--settle", type=float, default=None)
    parser.add_argument("--tables-interval", type=int, default=None)
    parser.add_argument("--wait", type=float, default=None, help="seconds to wait for settling")
    parser.add_argument(
        "--crash", choices=sorted(CRASHES), default=None, help="kill it once, mid-soak"
    )
    parser.add_argument("--crash-after", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    args.documents = args.documents or (20 if quick else 300)
    args.latency = args.latency if args.latency is not None else (0.2 if quick else 1.0)
    args.client_timeout = args.client_timeout or (3.0 if quick else 10.0)
    args.sensor_interval = args.sensor_interval or (1 if quick else PRODUCT.sensor_interval_seconds)
    args.settle = args.settle if args.settle is not None else (0.5 if quick else 1.0)
    args.tables_interval = args.tables_interval or (1 if quick else PRODUCT.tables_interval_seconds)
    args.wait = args.wait or (240.0 if quick else 600.0 + 3.0 * args.documents)
    return args


class Soak:
    """The running deployment and what the soak reads back from it."""

    def __init__(self, pipeline: RunningPipeline, expected: dict[str, str]) -> None:
        self.pipeline = pipeline
        self.expected = expected  # file name -> document key
        self.store = LocalObjectStore(pipeline.data_dir)
        self.policy = RetryPolicy(max_attempts=PRODUCT.operations.max_attempts)

    def report(self) -> StatusReport:
        return status_report(self.pipeline.instance, self.store, self.policy)

    def table_keys(self) -> list[str]:
        table = read_table(self.pipeline.data_dir, "documents", ["document_key"])
        return [] if table is None else table.column("document_key").to_pylist()

    def progress(self, report: StatusReport) -> dict[str, int]:
        """What settling waits for: documents in a terminal state, unfinished runs, table rows,
        dead letters recorded (the sensor's) against dead-letter documents (the state's)."""
        return {
            "terminal": sum(report.counts[state] for state in TERMINAL),
            "unfinished_runs": len(
                self.pipeline.instance.get_run_ids(dg.RunsFilter(statuses=UNFINISHED))
            ),
            "table_rows": len(self.table_keys()),
            "dead_letters_recorded": len(report.dead_letters),
            "dead_letter_documents": report.counts["dead_letter"],
        }

    def settled(self, report: StatusReport, progress: dict[str, int]) -> bool:
        dead = {letter.document_key for letter in report.dead_letters}
        return (
            report.total >= len(self.expected)
            and progress["terminal"] == report.total
            and progress["unfinished_runs"] == 0
            and progress["table_rows"] >= len(self.expected)
            and dead == set(report.documents_by_state["dead_letter"])
        )

    def invariants(self, report: StatusReport, simulated: dict[str, Any]) -> dict[str, Any]:
        partitions = set(self.pipeline.instance.get_dynamic_partitions("documents"))
        rows = self.table_keys()
        expected = set(self.expected.values())
        state_of = {key: s for s, keys in report.documents_by_state.items() for key in keys}
        usable = {entry["document_name"]: entry["usable"] for entry in simulated["documents"]}
        paid = {key: usable.get(name, 0) for name, key in self.expected.items()}
        lost = sorted(key for key in expected if key not in partitions or key not in rows)
        duplicated = sorted(partitions - expected) + sorted(
            key for key in set(rows) if rows.count(key) > 1
        )
        return {
            "lost": lost,
            "duplicated": duplicated,
            "paid_twice": sorted(key for key, n in paid.items() if n > 1),
            "paid_not_kept": sorted(
                key for key, n in paid.items() if n and state_of.get(key) not in EXTRACTED
            ),
            "stuck": sorted(key for key, state in state_of.items() if state not in TERMINAL),
            "false_dead_letters": sorted(
                key for key in self.announced_dead_letters() if state_of.get(key) in EXTRACTED
            ),
        }

    def announced_dead_letters(self) -> set[str]:
        """Every document a `dead_letters` event announced (and the webhook was told of)."""
        records = self.pipeline.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=DEAD_LETTERS), limit=10_000
        ).records
        announced: set[str] = set()
        for record in records:
            new = record.asset_materialization.metadata.get("new_dead_letters")
            announced.update(new.value if new is not None else [])  # type: ignore[arg-type]
        return announced


def runs_by_job(instance: dg.DagsterInstance) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in instance.get_run_records():
        name = record.dagster_run.job_name
        counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    # Dagster's note on ranged planned events, once per status poll; history does not need them.
    warnings.filterwarnings("ignore", message="Asset materialization planned events")
    knobs = Knobs(
        max_concurrency=args.max_concurrency,
        sensor_interval=args.sensor_interval,
        settle_seconds=args.settle,
        tables_interval=args.tables_interval,
    )
    # Read by the daemon and everything it starts (the pipeline's environment extends ours).
    os.environ.update(
        EXTRACTION_TIMEOUT=str(args.client_timeout),
        EXTRACTION_RETRY_CRON=args.retry_cron,
        EXTRACTION_MAX_RETRIES=str(args.agent_retries),
    )
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir(args.keep))
        paths, pages = make_corpus(workdir / "corpus", args.documents)
        expected = {
            path.name: document_key(path.name, sha256_hex(path.read_bytes())) for path in paths
        }
        simulator = start_simulator(args.latency, workdir, stack)
        simulator.control.configure(fault_mix="standard", seed=args.seed)
        server_url, origin = stack.enter_context(pg_server(args.pg_url, workdir))
        pg_url = stack.enter_context(fresh_database(server_url))
        print(f"Postgres: {describe_server(server_url, origin)}")
        print(
            f"model: latency {args.latency}s, fault mix standard ({describe_mix('standard')}), "
            f"seed {args.seed}; client timeout {args.client_timeout}s, "
            f"agent retries {args.agent_retries}, retry schedule '{args.retry_cron}'"
        )
        pipeline = RunningPipeline(workdir / "pipeline", pg_url, simulator.base_url, knobs, stack)
        startup = pipeline.wait_ready()
        print(f"daemon up after {startup:.1f}s; dropping {len(paths)} PDFs ({pages} pages)")
        soak = Soak(pipeline, expected)
        dropped = time.monotonic()
        drop_files(paths, pipeline.inbox)
        crash = CRASHES.get(args.crash or "")
        report = soak.report()
        progress = soak.progress(report)
        while not soak.settled(report, progress) and time.monotonic() - dropped < args.wait:
            if pipeline.daemon.poll() is not None:
                print(f"dagster-daemon exited; see {pipeline.workdir / 'daemon.log'}")
                break
            if crash is not None and time.monotonic() - dropped >= args.crash_after:
                crash = None if crash(pipeline) else crash
            time.sleep(2.0)
            report = soak.report()
            progress = soak.progress(report)
            shown = ", ".join(f"{name.replace('_', ' ')} {n}" for name, n in progress.items())
            print(f"  {time.monotonic() - dropped:6.0f}s  {shown}", flush=True)
        settled = soak.settled(report, progress)
        settle_s = round(time.monotonic() - dropped, 1)
        simulated = simulator.control.requests()
        found = soak.invariants(report, simulated)
        runs = runs_by_job(pipeline.instance)

    counts = {name: len(keys) for name, keys in found.items()}
    print_table(
        f"Soak: N={args.documents} under the standard fault mix (seed {args.seed})",
        [
            *[(name.replace("_", " ") + " (must be 0)", counts[name]) for name in INVARIANTS],
            ("settled", "yes" if settled else "NO"),
            ("time to settle, s (from the drop)", settle_s),
            *[(f"documents {state.replace('_', ' ')}", report.counts[state]) for state in TERMINAL],
            ("model requests", simulated["count"]),
            *[(f"  fault {kind}", n) for kind, n in sorted(simulated["by_fault"].items())],
            *[(f"runs of {job}", n) for job, n in sorted(runs.items())],
            ("cost, USD (documents.parquet)", report.cost_usd),
        ],
    )
    failed = [name for name in INVARIANTS if counts[name]] + ([] if settled else ["not settled"])
    for name in INVARIANTS:
        if found[name]:
            print(f"{name}: {', '.join(found[name][:20])}")
    write_results(
        "soak",
        {
            "settled": settled,
            "settle_s": settle_s,
            **counts,
            "documents_by_state": {state: report.counts[state] for state in report.counts},
            "model_requests": simulated["count"],
            "faults": simulated["by_fault"],
            "runs_by_job": runs,
            "cost_usd": report.cost_usd,
            "daemon_startup_s": round(startup, 1),
            "failed_invariants": failed,
            "offenders": {name: keys[:50] for name, keys in found.items() if keys},
        },
        {
            **knobs.as_dict(),
            "documents": args.documents,
            "latency_s": args.latency,
            "seed": args.seed,
            "client_timeout_s": args.client_timeout,
            "agent_retries": args.agent_retries,
            "retry_cron": args.retry_cron,
            "crash": args.crash,
            "quick": args.quick,
        },
    )
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
