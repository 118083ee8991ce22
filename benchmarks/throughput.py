"""Throughput: the full pipeline against the plain asyncio script users compare it with.

(a) plain: `asyncio.gather` over the PDFs, an `asyncio.Semaphore(C)` around
    read_pdf + `AsyncOpenAI().responses.parse(text_format=Invoice)`; no durability.
(b) pipeline: the PDFs dropped into the inbox of a running `dagster-daemon` (fresh DAGSTER_HOME,
    fresh Postgres database): inbox_sensor -> ranged runs -> every `extraction` partition
    materialised and documents.parquet holding N extracted rows.
Both against one model simulator subprocess with a fixed latency; ideal = C / latency docs/s.
The pipeline runs with EXTRACTION_MAX_CONCURRENCY = C, a cap for the whole deployment (every run
shares it through Postgres), so both sides may have C calls in flight.

    .venv/bin/python benchmarks/throughput.py            # N=1000, C=32, latency 1.0 s
    .venv/bin/python benchmarks/throughput.py --quick    # N=48, short intervals
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    MODEL,
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
from daemon import PRODUCT, RATE_WINDOW_SECONDS, Knobs, RunningPipeline
from meter import ProcessTreeMeter
from openai import AsyncOpenAI

from extraction_pipeline.core.documents.pdf import read_pdf
from extraction_pipeline.core.extraction.schemas import Invoice


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=48 and 1 s intervals: seconds")
    parser.add_argument("-n", "--documents", type=int, default=None, help="default 1000")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0, help="simulator seconds per call")
    parser.add_argument("--pg-url", default=None, help="a Postgres server (default: see README)")
    parser.add_argument(
        "--sensor-interval", type=int, default=None, help="default: the product's (1 quick)"
    )
    parser.add_argument("--sensor-max-files", type=int, default=PRODUCT.sensor_max_files)
    parser.add_argument(
        "--settle", type=float, default=None, help="default: the product's (0.5 quick)"
    )
    parser.add_argument(
        "--tables-interval", type=int, default=None, help="default: the product's (1 quick)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds for (b)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    quick = args.quick
    args.documents = args.documents or (48 if quick else 1000)
    args.sensor_interval = args.sensor_interval or (1 if quick else PRODUCT.sensor_interval_seconds)
    args.settle = (
        args.settle if args.settle is not None else (0.5 if quick else PRODUCT.settle_seconds)
    )
    args.tables_interval = args.tables_interval or (1 if quick else PRODUCT.tables_interval_seconds)
    ideal_seconds = args.documents * args.latency / args.concurrency
    args.timeout = args.timeout or max(180.0, 20 * ideal_seconds)
    return args


async def plain_script(paths: list[Path], base_url: str, concurrency: int) -> int:
    """What a user writes without an orchestrator; returns the number of parsed invoices."""
    semaphore = asyncio.Semaphore(concurrency)
    async with AsyncOpenAI(api_key=API_KEY, base_url=base_url) as client:

        async def extract(path: Path) -> Invoice | None:
            async with semaphore:
                text = "\n".join(read_pdf(path.read_bytes()).page_texts)
                response = await client.responses.parse(
                    model=MODEL, input=text, text_format=Invoice
                )
                return response.output_parsed

        results = await asyncio.gather(*(extract(path) for path in paths))
    return sum(result is not None for result in results)


def run_plain(paths: list[Path], args: argparse.Namespace, simulator: Any) -> dict[str, Any]:
    simulator.reset(args.latency)
    with ProcessTreeMeter([simulator.process.pid]) as simulator_cpu:
        simulator_cpu.mark_baseline()
        wall, cpu = time.perf_counter(), time.process_time()
        parsed = asyncio.run(plain_script(paths, simulator.base_url, args.concurrency))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stats = simulator.stats()
        simulator_seconds = simulator_cpu.cpu()
    if parsed != len(paths):
        raise RuntimeError(f"plain script: {parsed} of {len(paths)} invoices parsed")
    return {
        "documents": len(paths),
        "wall_s": round(wall, 2),
        "docs_per_s": round(len(paths) / wall, 2),
        "cpu_ms_per_doc": round(1000 * cpu / len(paths), 2),
        "peak_in_flight": stats["peak_in_flight"],
        "model_calls": stats["count"],
        "simulator_cpu_s": simulator_seconds,
    }


def run_pipeline(
    paths: list[Path], args: argparse.Namespace, simulator: Any, stack: contextlib.ExitStack
) -> dict[str, Any]:
    server_url, origin = stack.enter_context(pg_server(args.pg_url, args.workdir))
    pg_url = stack.enter_context(fresh_database(server_url))
    knobs = Knobs(
        max_concurrency=args.concurrency,
        sensor_interval=args.sensor_interval,
        sensor_max_files=args.sensor_max_files,
        settle_seconds=args.settle,
        tables_interval=args.tables_interval,
    )
    print(f"Postgres: {describe_server(server_url, origin)}")
    print(
        f"pipeline knobs: EXTRACTION_MAX_CONCURRENCY={knobs.max_concurrency} for the deployment, "
        f"sensor every {knobs.sensor_interval}s, <= {knobs.sensor_max_files} files/tick, "
        f"settle {knobs.settle_seconds}s, tables every {knobs.tables_interval}s"
    )
    pipeline = RunningPipeline(args.workdir / "pipeline", pg_url, simulator.base_url, knobs, stack)
    startup = pipeline.wait_ready()
    simulator.reset(args.latency)
    simulator_cpu = stack.enter_context(ProcessTreeMeter([simulator.process.pid]))
    simulator_cpu.mark_baseline()
    pipeline.meter.mark_baseline()
    dropped_at, started = time.time(), time.monotonic()
    drop_files(paths, pipeline.inbox)
    n = len(paths)
    extracted_s, tables_s = pipeline.wait_done(n, started, args.timeout)
    wall = max(extracted_s, tables_s)
    documents_keys, invoice_keys = pipeline.table_keys("documents"), pipeline.table_keys("invoices")
    cpu = pipeline.meter.cpu_by_role()
    stats = simulator.stats()
    return {
        "documents": n,
        "wall_s": round(wall, 2),
        "docs_per_s": round(n / wall, 2),
        "docs_per_s_to_last_extraction": round(n / extracted_s, 2),
        "peak_in_flight": stats["peak_in_flight"],
        "model_calls": stats["count"],
        "documents_rows": len(documents_keys),
        "documents_distinct_keys": len(set(documents_keys)),
        "invoices_rows": len(invoice_keys),
        "invoices_distinct_keys": len(set(invoice_keys)),
        "daemon_startup_s": round(startup, 1),
        "observed_all_extracted_s": round(extracted_s, 2),
        "observed_tables_complete_s": round(tables_s, 2),
        **pipeline.timeline(dropped_at),
        "pipeline_cpu_s": round(sum(cpu.values()), 2),
        "pipeline_cpu_ms_per_doc": round(1000 * sum(cpu.values()) / n, 1),
        "pipeline_cpu_s_by_role": cpu,
        "simulator_cpu_s": simulator_cpu.cpu(),
        "knobs": knobs.as_dict(),
        "postgres": origin,
    }


def self_checks(
    plain: dict[str, Any], pipeline: dict[str, Any], args: argparse.Namespace
) -> dict[str, bool]:
    """What must hold for the figures to mean anything: every document extracted exactly once
    (one model call each, one row each in documents.parquet and invoices.parquet) and never more
    calls in flight than the cap, on both sides."""
    n, cap = args.documents, args.concurrency
    return {
        f"plain: model calls = {n}": plain["model_calls"] == n,
        f"plain: peak in flight <= {cap}": plain["peak_in_flight"] <= cap,
        f"pipeline: model calls = {n}": pipeline["model_calls"] == n,
        f"pipeline: peak in flight <= {cap}": pipeline["peak_in_flight"] <= cap,
        f"pipeline: documents.parquet rows = {n}, one per document": (
            pipeline["documents_rows"] == pipeline["documents_distinct_keys"] == n
        ),
        f"pipeline: invoices.parquet rows = {n}, one per document": (
            pipeline["invoices_rows"] == pipeline["invoices_distinct_keys"] == n
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    with contextlib.ExitStack() as stack:
        args.workdir = stack.enter_context(scratch_dir(args.keep))
        started = time.perf_counter()
        paths, pages = make_corpus(args.workdir / "corpus", args.documents)
        print(
            f"corpus: {len(paths)} PDFs, {pages} pages "
            f"({time.perf_counter() - started:.1f}s to generate)"
        )
        simulator = start_simulator(args.latency, args.workdir, stack)
        print(f"(a) plain asyncio script, Semaphore({args.concurrency}) ...", flush=True)
        plain = run_plain(paths, args, simulator)
        print(f"    {plain['docs_per_s']} docs/s, peak in flight {plain['peak_in_flight']}")
        print("(b) full pipeline (daemon, sensor, runs, tables) ...", flush=True)
        try:
            pipeline = run_pipeline(paths, args, simulator, stack)
        except TimeoutError as error:
            print(f"(b) did not finish: {error}")
            write_results(
                "throughput",
                {"plain": plain, "pipeline": None, "error": str(error)},
                {"documents": args.documents, "concurrency": args.concurrency},
            )
            return 1

    ideal = args.concurrency / args.latency
    checks = self_checks(plain, pipeline, args)
    ratios = {
        "pipeline_over_plain": round(pipeline["docs_per_s"] / plain["docs_per_s"], 3),
        "pipeline_over_ideal": round(pipeline["docs_per_s"] / ideal, 3),
        "plain_over_ideal": round(plain["docs_per_s"] / ideal, 3),
    }
    print_table(
        f"Throughput: N={args.documents}, latency {args.latency}s, concurrency "
        f"{args.concurrency} (ideal {ideal:g} docs/s)",
        [
            ("documents/s", plain["docs_per_s"], pipeline["docs_per_s"]),
            ("wall time, s", plain["wall_s"], pipeline["wall_s"]),
            (
                "peak calls in flight (simulator)",
                plain["peak_in_flight"],
                pipeline["peak_in_flight"],
            ),
            ("model calls", plain["model_calls"], pipeline["model_calls"]),
            ("client CPU ms/doc", plain["cpu_ms_per_doc"], pipeline["pipeline_cpu_ms_per_doc"]),
            ("simulator CPU, s", plain["simulator_cpu_s"], pipeline["simulator_cpu_s"]),
        ],
        header=("", "plain asyncio", "pipeline"),
    )
    print_table(
        "Pipeline wall-time breakdown (seconds after the drop)",
        [
            ("first run created (sensor tick)", pipeline["first_run_created_s"]),
            ("first run started", pipeline["first_run_started_s"]),
            ("last extraction materialised", pipeline["last_extraction_s"]),
            ("last run ended", pipeline["last_run_ended_s"]),
            ("last tables refresh", pipeline["last_tables_refresh_s"]),
            ("intake runs", pipeline["intake_runs"]),
            ("other runs (tables refreshes)", pipeline["other_runs (tables, ...)"]),
            ("pipeline CPU by process, s", pipeline["pipeline_cpu_s_by_role"]),
        ],
    )
    print("first run's start-up, s:", pipeline["first_run_stages_s"])
    runs = pipeline["intake_runs_created_started_ended_s"]
    print("intake runs (created, started, ended), s:", runs)
    print("inbox_sensor ticks (start, end, runs), s:", pipeline["inbox_sensor_ticks_s"])
    print(
        f"extractions recorded per {RATE_WINDOW_SECONDS} s after the drop:",
        pipeline[f"extractions_per_{RATE_WINDOW_SECONDS}s"],
    )
    print_table(
        "Ratios",
        [
            ("pipeline / plain (target >= 0.8)", ratios["pipeline_over_plain"]),
            ("pipeline / ideal", ratios["pipeline_over_ideal"]),
            ("plain / ideal", ratios["plain_over_ideal"]),
        ],
    )
    print_table("Self-checks", [(name, "ok" if ok else "FAILED") for name, ok in checks.items()])
    write_results(
        "throughput",
        {
            "plain": plain,
            "pipeline": pipeline,
            "ideal_docs_per_s": ideal,
            "ratios": ratios,
            "self_checks": checks,
        },
        {
            "documents": args.documents,
            "concurrency": args.concurrency,
            "latency_s": args.latency,
            "quick": args.quick,
        },
    )
    if not all(checks.values()):
        print("self-checks FAILED: the figures above do not count")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
