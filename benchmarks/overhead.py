"""Overhead: CPU the pipeline's processes spend per document, and where it goes.

1. The full pipeline as in throughput.py (b), shipped configuration (dagster.yaml, defaults):
   CPU per document of the daemon and every process it starts (code server, run workers) and
   of the Postgres server, from the moment the idle pipeline is up until the tables hold all N
   documents; the headline is the sum of all of them (aim: < 60 ms/doc). Postgres is measured
   server-wide: on a shared server other clients' load is included. The simulator is not.
2. In-process breakdown over M documents (no daemon), on the shipped storage classes:
   read_pdf; the model client (core.agent.extract_many against the simulator); Dagster
   (intake_job.execute_in_process of one ranged run minus the same work through
   core.extraction without Dagster); the table refresh (core.tables.refresh_tables).

    .venv/bin/python benchmarks/overhead.py            # N=1000, M=200
    .venv/bin/python benchmarks/overhead.py --quick    # N=48, M=24
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
from common import (
    API_KEY,
    describe_server,
    exit_on_sigterm,
    fresh_database,
    make_corpus,
    pg_server,
    postmaster_pid,
    print_table,
    scratch_dir,
    shipped_storage,
    start_simulator,
    write_results,
)
from daemon import PRODUCT
from meter import ProcessTreeMeter
from throughput import run_pipeline

from extraction_pipeline.core.documents.pdf import read_pdf
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.extraction.outcomes import ExtractionJob
from extraction_pipeline.core.extraction.records import RecordStore
from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.core.extraction.stream import extract_documents
from extraction_pipeline.core.extraction.validation import ValidationPolicy
from extraction_pipeline.core.model.agent import extract_many
from extraction_pipeline.core.model.types import DocumentInput
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.core.tables.layout import TableSet
from extraction_pipeline.core.tables.refresh import refresh_tables
from extraction_pipeline.definitions import build_definitions
from extraction_pipeline.instance.names import RANGE_END_TAG, RANGE_START_TAG

REFRESH_BATCH = 25
AIM_MS_PER_DOC = 60  # issue 12: all processes, Postgres included
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", "--documents", type=int, default=None, help="default 1000")
    parser.add_argument("-m", "--breakdown-documents", type=int, default=None, help="default 200")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--sensor-interval", type=int, default=None)
    parser.add_argument("--sensor-max-files", type=int, default=PRODUCT.sensor_max_files)
    parser.add_argument("--settle", type=float, default=None)
    parser.add_argument("--tables-interval", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--skip-pipeline", action="store_true", help="only the breakdown")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    args.documents = args.documents or (48 if quick else 1000)
    args.breakdown_documents = args.breakdown_documents or (24 if quick else 200)
    args.sensor_interval = args.sensor_interval or (1 if quick else PRODUCT.sensor_interval_seconds)
    args.settle = (
        args.settle if args.settle is not None else (0.5 if quick else PRODUCT.settle_seconds)
    )
    args.tables_interval = args.tables_interval or (1 if quick else PRODUCT.tables_interval_seconds)
    args.timeout = args.timeout or max(180.0, 20 * args.documents * args.latency / 32)
    return args


class Clock:
    """Wall and CPU seconds of this process (and of the Postgres server, when local)."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster

    @contextlib.contextmanager
    def measure(self, into: dict[str, float]) -> Any:
        meter = ProcessTreeMeter([self.postmaster]) if self.postmaster else None
        if meter:
            meter.__enter__()
            meter.mark_baseline()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            into["wall_s"] = time.perf_counter() - wall
            into["cpu_s"] = time.process_time() - cpu
            if meter:
                into["postgres_cpu_s"] = meter.cpu()
                meter.stop()


def register_all(data_dir: Path, paths: list[Path]) -> list[str]:
    registry = DocumentRegistry(LocalObjectStore(data_dir))
    return [registry.register(p.name, p.read_bytes()).record.document_key for p in paths]


def breakdown(
    args: argparse.Namespace, paths: list[Path], simulator: Any, server_url: str
) -> dict[str, dict[str, float]]:
    m = len(paths)
    clock = Clock(postmaster_pid(server_url))
    figures: dict[str, dict[str, float]] = {}
    blobs = [p.read_bytes() for p in paths]

    figures["read_pdf"] = {}
    with clock.measure(figures["read_pdf"]):
        infos = [read_pdf(blob) for blob in blobs]

    settings = Settings.from_env(
        {
            "EXTRACTION_DATA_DIR": str(args.workdir / "breakdown-dagster"),
            "OPENAI_BASE_URL": simulator.base_url,
            "EXTRACTION_MAX_CONCURRENCY": str(args.concurrency),
        }
    )
    config = settings.extraction.agent_config(api_key=API_KEY)
    inputs = [
        DocumentInput(f"doc-{i}", p.name, blob, info.page_texts, info.has_text_layer)
        for i, (p, blob, info) in enumerate(zip(paths, blobs, infos, strict=True))
    ]
    simulator.reset(args.latency)
    figures["model_client"] = {}
    with clock.measure(figures["model_client"]):
        outcomes = asyncio.run(extract_many(inputs, Invoice, config))
    assert all(o.ok for o in outcomes), "model client: some extractions failed"

    # The same documents through core.extraction (what the op does, minus Dagster) ...
    plain_dir = args.workdir / "breakdown-plain"
    keys = register_all(plain_dir, paths)
    store = LocalObjectStore(plain_dir)
    job = ExtractionJob(
        registry=DocumentRegistry(store),
        records=RecordStore(store),
        schema=Invoice,
        config=config,
        policy=ValidationPolicy(),
        pdf_limits=settings.pdf_limits,
    )
    figures["core_without_dagster"] = {}
    with clock.measure(figures["core_without_dagster"]):
        read = {k: read_pdf(job.registry.original(job.registry.get(k))) for k in keys}  # type: ignore[arg-type]
        extract_documents(job, keys, read)

    # ... and through Dagster: one ranged intake_job run, in process, on a fresh database.
    os.environ["OPENAI_API_KEY"] = API_KEY
    register_all(settings.data_dir, paths)
    with (
        fresh_database(server_url, "bench_overhead") as pg_url,
        dg.instance_for_test(overrides=shipped_storage(pg_url)) as instance,
    ):
        instance.add_dynamic_partitions("documents", keys)
        job_def = build_definitions(settings).resolve_job_def("intake_job")
        figures["dagster_intake_run"] = {}
        with clock.measure(figures["dagster_intake_run"]):
            result = job_def.execute_in_process(
                instance=instance,
                tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
                run_config=QUIET,
                raise_on_error=False,
            )
        assert result.success, "the in-process intake run failed"
        events = len(instance.get_records_for_run(result.run_id, limit=100_000).records)
    figures["dagster_intake_run"]["events"] = events

    outcomes_stored = [o for o in (job.records.load(k) for k in keys) if o is not None]
    tables_store = LocalObjectStore(args.workdir / "breakdown-tables")
    tables = TableSet.for_schema(Invoice)
    figures["refresh_tables"] = {}
    with clock.measure(figures["refresh_tables"]):
        for start in range(0, len(outcomes_stored), REFRESH_BATCH):
            refresh_tables(tables_store, tables, outcomes_stored[start : start + REFRESH_BATCH])

    for entry in figures.values():
        entry["cpu_ms_per_doc"] = round(1000 * entry["cpu_s"] / m, 2)
        entry["wall_ms_per_doc"] = round(1000 * entry["wall_s"] / m, 2)
        if "postgres_cpu_s" in entry:
            entry["postgres_cpu_ms_per_doc"] = round(1000 * entry["postgres_cpu_s"] / m, 2)
    dagster = figures["dagster_intake_run"]
    plain = figures["core_without_dagster"]
    figures["dagster_only"] = {
        "cpu_ms_per_doc": round(dagster["cpu_ms_per_doc"] - plain["cpu_ms_per_doc"], 2),
        "wall_ms_per_doc": round(dagster["wall_ms_per_doc"] - plain["wall_ms_per_doc"], 2),
        "postgres_cpu_ms_per_doc": round(
            dagster.get("postgres_cpu_ms_per_doc", 0) - plain.get("postgres_cpu_ms_per_doc", 0),
            2,
        ),
        "events_per_doc": round(dagster["events"] / m, 2),
    }
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    pipeline: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        args.workdir = stack.enter_context(scratch_dir(args.keep))
        paths, pages = make_corpus(args.workdir / "corpus", args.documents)
        print(f"corpus: {len(paths)} PDFs, {pages} pages")
        simulator = start_simulator(args.latency, args.workdir, stack)
        server_url, origin = stack.enter_context(pg_server(args.pg_url, args.workdir))
        print(f"Postgres: {describe_server(server_url, origin)}")
        print(f"in-process breakdown over M={args.breakdown_documents} documents ...", flush=True)
        parts = breakdown(args, paths[: args.breakdown_documents], simulator, server_url)
        if not args.skip_pipeline:
            print(f"full pipeline over N={args.documents} documents ...", flush=True)
            postmaster = postmaster_pid(server_url)
            pg_meter = ProcessTreeMeter([postmaster]) if postmaster else None
            if pg_meter:
                stack.enter_context(pg_meter)
                pg_meter.mark_baseline()
            pipeline = run_pipeline(paths, args, simulator, stack)
            if pg_meter:
                pipeline["postgres_cpu_ms_per_doc"] = round(
                    1000 * pg_meter.cpu() / args.documents, 1
                )

    rows = []
    if pipeline:
        postgres_ms = pipeline.get("postgres_cpu_ms_per_doc")
        pipeline["all_processes_cpu_ms_per_doc"] = (
            round(pipeline["pipeline_cpu_ms_per_doc"] + postgres_ms, 1) if postgres_ms else None
        )
        rows += [
            (
                f"all processes incl. Postgres (aim < {AIM_MS_PER_DOC})",
                pipeline["all_processes_cpu_ms_per_doc"] or "n/a (remote Postgres)",
            ),
            ("pipeline processes", pipeline["pipeline_cpu_ms_per_doc"]),
            *[
                (f"  {role}", round(1000 * s / args.documents, 1))
                for role, s in pipeline["pipeline_cpu_s_by_role"].items()
            ],
            ("Postgres server (same window)", pipeline.get("postgres_cpu_ms_per_doc", "n/a")),
        ]
    print_table(
        f"Pipeline CPU per document, ms (N={args.documents}, daemon-launched runs)",
        rows or [("skipped", "")],
    )
    labels = {
        "read_pdf": "read_pdf",
        "model_client": "model client (extract_many)",
        "core_without_dagster": "core.extraction, no Dagster",
        "dagster_intake_run": "intake_job.execute_in_process",
        "dagster_only": "Dagster events (difference)",
        "refresh_tables": f"refresh_tables ({REFRESH_BATCH}/batch)",
    }
    print_table(
        f"In-process breakdown per document, ms (M={args.breakdown_documents})",
        [
            (
                labels[name],
                entry["cpu_ms_per_doc"],
                entry["wall_ms_per_doc"],
                entry.get("postgres_cpu_ms_per_doc", "n/a"),
            )
            for name, entry in parts.items()
        ],
        header=("", "CPU", "wall", "Postgres CPU"),
    )
    dagster_ms = parts["dagster_only"]["cpu_ms_per_doc"]
    client_ms = parts["model_client"]["cpu_ms_per_doc"]
    if pipeline:
        headline = pipeline["all_processes_cpu_ms_per_doc"] or pipeline["pipeline_cpu_ms_per_doc"]
        print(
            f"\nratio CPU per document / aim: {headline / AIM_MS_PER_DOC:.2f}; "
            f"Dagster events / model client CPU: {dagster_ms / client_ms:.2f}"
        )
    write_results(
        "overhead",
        {
            "all_processes_cpu_ms_per_doc": pipeline.get("all_processes_cpu_ms_per_doc"),
            "pipeline_cpu_ms_per_doc": pipeline.get("pipeline_cpu_ms_per_doc"),
            "pipeline": pipeline,
            "breakdown": parts,
        },
        {
            "documents": args.documents,
            "breakdown_documents": args.breakdown_documents,
            "concurrency": args.concurrency,
            "latency_s": args.latency,
            "quick": args.quick,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
