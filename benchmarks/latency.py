"""Latency: one PDF dropped into an idle, running pipeline, until its row is in invoices.parquet.

The daemon is started once; then K times (one at a time, each into an idle pipeline: no run
under way, tables refreshed) one new invoice is dropped and the time until its row appears in
invoices.parquet is measured. Median of K; target <= sensor interval + 4 s. Each drop is split
into stages from the instance's own records: sensor tick (run created), run launch (run
started), extraction materialised, tables refreshed, row visible.

    .venv/bin/python benchmarks/latency.py            # K=10, product defaults for intervals
    .venv/bin/python benchmarks/latency.py --quick    # K=2, 1 s intervals
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from typing import Any

import dagster as dg
from common import (
    describe_server,
    exit_on_sigterm,
    fresh_database,
    pg_server,
    print_table,
    scratch_dir,
    start_simulator,
    wait_for,
    write_results,
)
from daemon import EXTRACTION, PRODUCT, Knobs, RunningPipeline, read_table

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.identity import document_key
from extraction_pipeline.core.documents.pdf import sha256_hex

STAGES = (
    ("sensor tick: run created", "run_created_s"),
    ("run started", "run_started_s"),
    ("extraction materialised", "extraction_s"),
    ("invoices table refreshed", "tables_s"),
    ("row visible in invoices.parquet", "row_visible_s"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-k", "--drops", type=int, default=None, help="default 10")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument(
        "--sensor-interval", type=int, default=None, help="default: the product's (1 quick)"
    )
    parser.add_argument(
        "--settle", type=float, default=None, help="default: the product's (0.5 quick)"
    )
    parser.add_argument(
        "--tables-interval", type=int, default=None, help="default: the product's (1 quick)"
    )
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    args.drops = args.drops or (2 if args.quick else 10)
    args.sensor_interval = args.sensor_interval or (
        1 if args.quick else PRODUCT.sensor_interval_seconds
    )
    args.settle = (
        args.settle if args.settle is not None else (0.5 if args.quick else PRODUCT.settle_seconds)
    )
    args.tables_interval = args.tables_interval or (
        1 if args.quick else PRODUCT.tables_interval_seconds
    )
    return args


def invoice_keys(pipeline: RunningPipeline) -> set[str]:
    table = read_table(pipeline.data_dir, "invoices", ["document_key"])
    return set(table.column("document_key").to_pylist()) if table is not None else set()


def stages(pipeline: RunningPipeline, key: str, dropped: float, seen: float) -> dict[str, Any]:
    instance = pipeline.instance
    (run,) = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": key}))
    (extraction,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EXTRACTION, asset_partitions=[key]), limit=1
    ).records
    refreshes = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("invoices"), after_storage_id=extraction.storage_id
        ),
        limit=1,
        ascending=True,
    ).records
    return {
        "run_created_s": round(run.create_timestamp.timestamp() - dropped, 2),
        "run_started_s": round((run.start_time or 0) - dropped, 2),
        "extraction_s": round(extraction.timestamp - dropped, 2),
        "tables_s": round(refreshes[0].timestamp - dropped, 2) if refreshes else None,
        "row_visible_s": round(seen - dropped, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    knobs = Knobs(
        max_concurrency=args.max_concurrency,
        sensor_interval=args.sensor_interval,
        settle_seconds=args.settle,
        tables_interval=args.tables_interval,
    )
    drops: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir(args.keep))
        simulator = start_simulator(args.latency, workdir, stack)
        server_url, origin = stack.enter_context(pg_server(args.pg_url, workdir))
        pg_url = stack.enter_context(fresh_database(server_url))
        print(f"Postgres: {describe_server(server_url, origin)}")
        print(
            f"sensor interval {knobs.sensor_interval}s, settle {knobs.settle_seconds}s, "
            f"tables automation interval {knobs.tables_interval}s, model latency {args.latency}s"
        )
        pipeline = RunningPipeline(workdir / "pipeline", pg_url, simulator.base_url, knobs, stack)
        startup = pipeline.wait_ready()
        print(f"daemon up after {startup:.1f}s; dropping {args.drops} PDFs one at a time")
        for index in range(1, args.drops + 1):
            wait_for(lambda: pipeline.unfinished_runs() == 0, 120, "an idle pipeline", 0.5)
            time.sleep(1.0)
            invoice = make_invoice(10_000 + index, seed=23)
            data = invoice_pdf(invoice)
            name = f"latency {invoice.invoice_number}.pdf"
            key = document_key(name, sha256_hex(data))
            temporary = pipeline.inbox / f".{name}.part"
            temporary.write_bytes(data)
            dropped = time.time()
            temporary.replace(pipeline.inbox / name)
            wait_for(lambda k=key: k in invoice_keys(pipeline), 180, f"the row of {name}", 0.1)
            seen = time.time()
            drop = stages(pipeline, key, dropped, seen)
            drops.append(drop)
            print(f"  drop {index}: row after {drop['row_visible_s']:.2f}s  {drop}", flush=True)

    median = {field: statistics.median(d[field] or 0 for d in drops) for _, field in STAGES}
    target = knobs.sensor_interval + 4
    print_table(
        f"Latency of one dropped PDF (median of {len(drops)}), seconds after the drop",
        [(label, median[field]) for label, field in STAGES]
        + [
            ("target: sensor interval + 4 s", target),
            ("ratio median / target", round(median["row_visible_s"] / target, 2)),
            ("sensor interval used, s", knobs.sensor_interval),
            ("settle seconds used", knobs.settle_seconds),
            ("tables automation interval used, s", knobs.tables_interval),
        ],
    )
    write_results(
        "latency",
        {
            "median_s": median["row_visible_s"],
            "median_stages_s": median,
            "target_s": target,
            "ratio_to_target": round(median["row_visible_s"] / target, 3),
            "drops": drops,
            "daemon_startup_s": round(startup, 1),
        },
        {**knobs.as_dict(), "drops": args.drops, "latency_s": args.latency, "quick": args.quick},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
