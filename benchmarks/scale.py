"""Scale: 100,000 documents. Registration, a sensor tick, the nightly schedule's tick, a table
refresh, peak memory and event-log growth, on a real Postgres instance.

(a) register N tiny one-page PDFs (core.registry.DocumentRegistry) and add them as partitions
    (instance.add_dynamic_partitions in chunks of 1,000); the sensor cursor after this first
    pass comes from core.inbox.plan_intake, the function the sensor itself uses;
(b) 1,000 new files arrive in the inbox holding N: the real `inbox_sensor` evaluated with
    build_sensor_context on that instance and cursor (EXTRACTION_SENSOR_MAX_FILES=1000), and
    what the daemon then does with any partition request in its result (has_dynamic_partition
    per key, one add_dynamic_partitions; the sensor now adds its partitions itself); the
    folder's listing timed apart (it grows with the files left in it); after (g), once more
    with 1,000 new files in an emptied drop folder (taken files are stored: a deployment can
    empty it);
(c) `nightly_intake` (and `retry_failed`) evaluated with build_schedule_context on the event
    log a deployment would hold (`stage_event_history`: 4 events per document, 2% failed first
    (--failed-share), half of those still failed, with 1-3 attempts each, each attempt a run)
    while 1,000 documents are unextracted;
(d) core.tables.refresh_tables of 1,000 new outcomes into tables already holding N rows;
(e) peak RSS of every process (each stage runs in its own process, like the code server or a
    run worker would; Postgres when it runs on this machine);
(f) event-log growth per document: pg_total_relation_size('event_logs') and rows before and
    after one ranged intake_job run of 200 documents (in process, model simulator);
(g) archiving (core.operations.archive): one tick of the `archive_settled` sensor on all N
    live partitions (it removes them itself and stores the assets' partition status), every
    settled document archived, the UI's read of the partition status (instance/
    partition_status.py), then the ticks of (c) again on the live set that is left.
(h) the idle deployment, before (g) and after it: a code server and `dagster-daemon run`, as
    `dev` starts them, on that instance with an empty drop folder (taken files are stored; the
    folder can be emptied), nothing arriving (the schedules' crons out of the window, the runs
    created in it counted): CPU of the daemon, the code server and Postgres over IDLE_SECONDS
    after a warm-up, as a share of one core;
(i) the UI, before (g) and after it (ui_pages.py): a code server and `dagster-webserver` on
    that instance, the asset and partition pages of `extraction` and `source_document` and the
    global lineage opened in Chromium, seconds until each had its data; the webserver's RSS.
(c) evaluates the `tables_automation` sensor twice (no cursor, then the first tick's) with the
tables behind the staged outcomes, so its reads are the real ones; before (h) the tables are
brought up to date ((f)'s run refreshes them; with --ticks-only they are recorded as refreshed),
so the idle daemon starts no refresh, and (g) evaluates the sensor again on that.
Targets: each tick <= 2 s, refresh <= 5 s, no process above 1 GiB, idle below 5% of a core,
each UI page <= 5 s.

    .venv/bin/python benchmarks/scale.py            # N=100,000
    .venv/bin/python benchmarks/scale.py --quick    # N=2,000
    .venv/bin/python benchmarks/scale.py -n 1000000 --ticks-only   # (d), (f) skipped
    (--no-ui skips (i), --no-ui-live (i) before (g); without Chromium and playwright it is
    skipped, and said)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import multiprocessing
import os
import pstats
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    describe_server,
    exit_on_sigterm,
    fresh_database,
    pg_server,
    postmaster_pid,
    print_table,
    scratch_dir,
    sql_scalar,
    start_simulator,
    write_results,
)
from daemon import deployment_meter, start_deployment
from meter import ProcessTreeMeter

NEW_FILES = 1_000
CHUNK = 1_000
RUN_DOCUMENTS = 200
ARCHIVE_AFTER_DAYS = 1e-6  # (g): archiving on, for documents registered a moment ago
BULK_ABOVE = 200_000  # registered keys beyond which partitions are staged by COPY
FAILED_SHARE = 0.02  # of documents whose first attempt failed, in the event history
INVOICE = {
    "invoice_number": "INV-SC-000000",
    "invoice_date": "2026-03-01",
    "due_date": "2026-03-31",
    "vendor_name": "Acme Tools GmbH",
    "customer_name": "Globex Corporation",
    "currency": "EUR",
    "subtotal": 120.0,
    "tax": 22.8,
    "total": 142.8,
    "line_items": [
        {"description": "Steel bolts M8", "quantity": 4, "unit_price": 12.5, "amount": 50},
        {"description": "Pallet transport", "quantity": 1, "unit_price": 70, "amount": 70},
    ],
}


def _call_summary() -> Any:
    from extraction_pipeline.core.extraction.records import CallSummary

    return CallSummary(
        model="gpt-4.1-mini",
        api_mode="responses",
        input_mode="text",
        attempts=1,
        input_tokens=900,
        cached_input_tokens=0,
        output_tokens=180,
        cost_usd=0.00065,
        latency_seconds=1.0,
        request_id="req_1",
        prompt_version="v1",
        schema_name="Invoice",
        schema_fingerprint="f" * 16,
        repaired=False,
    )


PLACEHOLDER = b"INV-SC-000000"
GIB = 1024**3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=2,000")
    parser.add_argument("-n", "--documents", type=int, default=None, help="default 100,000")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile summary of each sensor and schedule tick",
    )
    parser.add_argument(
        "--no-ui", action="store_true", help="skip (i), the UI's pages in a browser"
    )
    parser.add_argument(
        "--no-ui-live",
        action="store_true",
        help="skip (i) before archiving (at 1,000,000 live partitions its pages time out)",
    )
    parser.add_argument(
        "--failed-share",
        type=float,
        default=FAILED_SHARE,
        help=f"of documents whose first attempt failed in (c)'s history (default {FAILED_SHARE})",
    )
    parser.add_argument(
        "--ticks-only",
        action="store_true",
        help="skip (d) and (f), which hold every table row in memory (for N=1,000,000)",
    )
    args = parser.parse_args(argv)
    args.documents = args.documents or (2_000 if args.quick else 100_000)
    return args


# --- the corpus -----------------------------------------------------------------------------


def template_pdf() -> bytes:
    """A one-page invoice with an uncompressed content stream, so a same-length number can be
    substituted in place without moving any xref offset."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.compress = False
    pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    lines = [
        f"Invoice number: {PLACEHOLDER.decode()}",
        "Invoice date: 2026-03-01",
        "Due date: 2026-03-31",
        "Vendor: Acme Tools GmbH",
        "Bill to: Globex Corporation",
        "Currency: EUR",
        "Item: Steel bolts M8 | 4 | 12.50 | 50.00",
        "Item: Pallet transport | 1 | 70.00 | 70.00",
        "Subtotal: 120.00",
        "Tax: 22.80",
        "Total: 142.80",
    ]
    for line in lines:
        pdf.cell(h=6, text=line, new_x="LMARGIN", new_y="NEXT")
    data = bytes(pdf.output())
    assert data.count(PLACEHOLDER) == 1
    return data


def write_pdfs(inbox: Path, start: int, count: int) -> float:
    """Files start..start+count-1 into the inbox; returns seconds taken."""
    from extraction_pipeline.core.documents.pdf import read_pdf

    template = template_pdf()
    began = time.perf_counter()
    for index in range(start, start + count):
        number = f"INV-SC-{index:06d}".encode()
        (inbox / f"scan {index:06d}.pdf").write_bytes(template.replace(PLACEHOLDER, number))
    seconds = time.perf_counter() - began
    sample = read_pdf((inbox / f"scan {start:06d}.pdf").read_bytes())
    assert f"INV-SC-{start:06d}" in sample.page_texts[0], "substituted PDF does not read back"
    return seconds


# --- stages, each in a fresh process --------------------------------------------------------


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _settings(ctx: dict[str, Any]) -> Any:
    from extraction_pipeline.core.settings import Settings

    return Settings.from_env(
        {
            "EXTRACTION_DATA_DIR": ctx["data_dir"],
            "EXTRACTION_INBOX": ctx["inbox"],
            "EXTRACTION_SETTLE_SECONDS": "0",
            "EXTRACTION_SENSOR_MAX_FILES": str(NEW_FILES),
            "OPENAI_BASE_URL": ctx.get("base_url") or "",
            "EXTRACTION_MAX_CONCURRENCY": "32",
            # (g) on: a deployment that archives (its documents were registered minutes ago).
            "EXTRACTION_ARCHIVE_AFTER_DAYS": str(ctx.get("archive_after_days", 0)),
        }
    )


def _instance(ctx: dict[str, Any]) -> Any:
    import dagster as dg

    return dg.DagsterInstance.from_config(ctx["home"])


def stage_register(ctx: dict[str, Any]) -> dict[str, Any]:
    from extraction_pipeline.core.documents.registry import DocumentRegistry
    from extraction_pipeline.core.intake.inbox import IntakeCursor, plan_intake, scan_inbox
    from extraction_pipeline.core.store import LocalObjectStore

    inbox = Path(ctx["inbox"])
    registry = DocumentRegistry(LocalObjectStore(ctx["data_dir"]))
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    began = time.perf_counter()
    plan = plan_intake(scan_inbox(inbox), IntakeCursor(), time.time_ns(), 0, 10**9)
    plan_s = time.perf_counter() - began
    began = time.perf_counter()
    keys = [
        registry.register(e.name, (inbox / e.name).read_bytes(), now=long_ago).record.document_key
        for e in plan.ready
    ]
    register_s = time.perf_counter() - began
    # Beyond BULK_ABOVE keys the bulk goes in by COPY (staging.py; add_dynamic_partitions does
    # ~5,000 keys/s) and the last 10,000 by the product's call, which is what is timed.
    bulk = keys[: -10 * CHUNK] if len(keys) > BULK_ABOVE else []
    with _instance(ctx) as instance:
        if bulk:
            from staging import copy_dynamic_partitions

            copy_dynamic_partitions(instance, "documents", bulk)
        added = keys[len(bulk) :]
        began = time.perf_counter()
        for start in range(0, len(added), CHUNK):
            instance.add_dynamic_partitions("documents", added[start : start + CHUNK])
        add_s = time.perf_counter() - began
        began = time.perf_counter()
        stored = len(instance.get_dynamic_partitions("documents"))
        list_s = time.perf_counter() - began
    return {
        "documents": stored,
        "scan_and_plan_s": round(plan_s, 2),
        "register_s": round(register_s, 2),
        "register_docs_per_s": round(len(keys) / register_s, 1),
        "add_partitions_s": round(add_s, 2),
        "add_partitions_keys_per_s": round(len(added) / add_s, 1),
        "get_dynamic_partitions_s": round(list_s, 3),
        "cursor": plan.cursor.serialize(),
        "peak_rss": _peak_rss(),
    }


def stage_sensor_tick(ctx: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    from extraction_pipeline.core.intake.inbox import scan_inbox
    from extraction_pipeline.definitions import build_definitions

    defs = build_definitions(_settings(ctx))
    sensor = defs.resolve_sensor_def("inbox_sensor")
    # The part of a tick that grows with the files left in the drop folder: listing it.
    began = time.perf_counter()
    listed = len(scan_inbox(Path(ctx["inbox"])))
    listing_s = time.perf_counter() - began
    with _instance(ctx) as instance:
        before = set(instance.get_dynamic_partitions("documents"))
        began = time.perf_counter()
        with (
            dg.build_sensor_context(
                instance=instance,
                cursor=ctx["cursor"],
                definitions=defs,
                resources={"document_store": defs.resources["document_store"]},
            ) as context,
            _profiled(ctx, "inbox_sensor"),
        ):
            result = sensor(context)
        tick_s = time.perf_counter() - began
        # What the daemon does with partition requests (the sensor adds its partitions itself
        # and returns none; kept to measure one if it did): checks each key, adds the new ones.
        requested = [k for r in result.dynamic_partitions_requests or [] for k in r.partition_keys]
        began = time.perf_counter()
        missing = [k for k in requested if not instance.has_dynamic_partition("documents", k)]
        has_s = time.perf_counter() - began
        began = time.perf_counter()
        if missing:
            instance.add_dynamic_partitions("documents", missing)
        add_s = time.perf_counter() - began
        keys = [k for k in instance.get_dynamic_partitions("documents") if k not in before]
        status_read = _status_read_s(instance) if ctx.get("archive_after_days") else None
    if len(keys) != ctx["new_files"]:
        raise RuntimeError(f"the sensor took {len(keys)} files, expected {ctx['new_files']}")
    return {
        "new_files": len(keys),
        "run_requests": len(result.run_requests or []),
        "sensor_tick_s": round(tick_s, 3),
        "files_in_folder": listed,
        "listing_folder_s": round(listing_s, 3),
        "requested_keys": len(requested),
        "daemon_has_partition_s": round(has_s, 3),
        "daemon_add_partitions_s": round(add_s, 3),
        "tick_plus_daemon_s": round(tick_s + has_s + add_s, 3),
        "status_read_s": status_read,
        "keys": keys,
        "peak_rss": _peak_rss(),
    }


def stage_event_history(ctx: dict[str, Any]) -> dict[str, Any]:
    """The event log a deployment would hold for the first N - 1,000 documents, written in
    bulk (staging.py: PostgreSQL COPY of the rows Dagster's own writes leave, checked equal to
    them): per document the two planned events of its run and the `source_document` and
    `extraction` materialisations with the product's outcome metadata; --failed-share of them
    failed first (a retryable failure observation per attempt, 1-3 attempts, each attempt
    after the first a run of its own, as the retry schedule launches them), and of those half
    were extracted on a later attempt and half are still failed, so the retry schedule has
    something to look at. The last 1,000 registered an hour ago and the 1,000 the sensor just
    took stay unextracted. Then VACUUM (ANALYZE), as autovacuum leaves a long-lived database."""
    import dagster as dg
    from staging import DocumentHistory, copy_document_history, settle

    history = DocumentHistory(
        invoice=INVOICE,
        call=_call_summary(),
        failed_share=ctx["failed_share"],
        run_documents=RUN_DOCUMENTS,
        now=datetime.now(UTC),
    )
    with _instance(ctx) as instance:
        keys = instance.get_dynamic_partitions("documents")[: ctx["documents"] - NEW_FILES]
        began = time.perf_counter()
        written = copy_document_history(instance, keys, history)
        seconds = time.perf_counter() - began
        settle(instance)
        materialized = len(instance.get_materialized_partitions(dg.AssetKey("extraction")))
    return {
        "materialised": materialized,
        "events": written,
        "events_per_doc": round(written / max(len(keys), 1), 2),
        "write_s": round(seconds, 2),
        "peak_rss": _peak_rss(),
    }


def stage_schedule_ticks(ctx: dict[str, Any]) -> dict[str, Any]:
    from extraction_pipeline.definitions import build_definitions

    defs = build_definitions(_settings(ctx))
    with _instance(ctx) as instance:
        figures = _tick_figures(ctx, defs, instance)
    figures["peak_rss"] = _peak_rss()
    return figures


def _tick_figures(ctx: dict[str, Any], defs: Any, instance: Any) -> dict[str, Any]:
    """Both schedules' ticks, and two ticks of the `tables_automation` sensor (the first
    without a cursor, then with the first one's)."""
    import dagster as dg

    figures: dict[str, Any] = {}
    for name in ("nightly_intake", "retry_failed"):
        began = time.perf_counter()
        with (
            dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=datetime.now(UTC),
                resources={"document_store": defs.resources["document_store"]},
            ) as context,
            _profiled(ctx, name),
        ):
            result = defs.resolve_schedule_def(name)(context)
        figures[f"{name}_tick_s"] = round(time.perf_counter() - began, 3)
        requests = result if isinstance(result, list) else [result]
        figures[f"{name}_run_requests"] = sum(isinstance(r, dg.RunRequest) for r in requests)
    cursor = None
    sensor = defs.resolve_sensor_def("tables_automation")
    for label in ("first", "next"):
        began = time.perf_counter()
        with (
            dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs) as context,
            _profiled(ctx, f"tables_automation ({label})"),
        ):
            result = sensor.evaluate_tick(context)
        figures[f"tables_automation_{label}_s"] = round(time.perf_counter() - began, 3)
        figures[f"tables_automation_{label}_requests"] = len(result.run_requests or [])
        cursor = result.cursor
    return figures


@contextlib.contextmanager
def _profiled(ctx: dict[str, Any], name: str) -> Any:
    if not ctx.get("profile"):
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        print(f"--- profile of {name} ---")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)


def stage_archive(ctx: dict[str, Any]) -> dict[str, Any]:
    """(g) Archiving: one tick of the `archive_settled` sensor on the full live set (it removes
    the partitions itself and stores the assets' partition status when the live set allows),
    then every settled document archived at once (`extraction-pipeline archive --after-days
    0`), what the UI then pays to read the partition status of both document assets, and the
    ticks of (c) measured again on the live set that is left."""
    import dagster as dg

    from extraction_pipeline.core.store import LocalObjectStore
    from extraction_pipeline.definitions import build_definitions
    from extraction_pipeline.instance.archive import archive_settled

    settings = _settings({**ctx, "archive_after_days": ARCHIVE_AFTER_DAYS})
    defs = build_definitions(settings)
    store = LocalObjectStore(settings.data_dir)
    figures: dict[str, Any] = {}
    with _instance(ctx) as instance:
        live = len(instance.get_dynamic_partitions("documents"))
        began = time.perf_counter()
        with (
            dg.build_sensor_context(
                instance=instance,
                definitions=defs,
                resources={"document_store": defs.resources["document_store"]},
            ) as context,
            _profiled(ctx, "archive_settled tick"),
        ):
            result = defs.resolve_sensor_def("archive_settled")(context)
        figures["archive_tick_s"] = round(time.perf_counter() - began, 3)
        figures["archive_tick_archived"] = live - len(instance.get_dynamic_partitions("documents"))
        figures["archive_tick_requests"] = len(result.dynamic_partitions_requests or [])
        began = time.perf_counter()
        report = archive_settled(instance, store, datetime.now(UTC), timedelta(0))
        seconds = time.perf_counter() - began
        figures["archive_all_s"] = round(seconds, 2)
        figures["archive_all_per_s"] = round(len(report.archived) / max(seconds, 1e-9))
        figures["live_before"] = live
        figures["live_after"] = len(instance.get_dynamic_partitions("documents"))
        figures["kept"] = report.kept
        figures["status_read_s"] = _status_read_s(instance)
        figures["after"] = _tick_figures(ctx, defs, instance)
    figures["peak_rss"] = _peak_rss()
    return figures


def _status_read_s(instance: Any) -> float:
    """What the UI's asset and partition pages pay to read the partition status of both
    document assets: Dagster's own reader, which rebuilds it from the whole history when the
    stored one is not stamped for the live partitions."""
    from dagster._core.storage.partition_status_cache import (
        get_and_update_asset_status_cache_value,
    )

    from extraction_pipeline.instance.names import DOCUMENT_KEYS, documents_partitions

    began = time.perf_counter()
    for key in DOCUMENT_KEYS:
        get_and_update_asset_status_cache_value(instance, key, documents_partitions)
    return round(time.perf_counter() - began, 3)


def stage_refresh(ctx: dict[str, Any]) -> dict[str, Any]:
    from extraction_pipeline.core.extraction.records import ExtractionRecord
    from extraction_pipeline.core.extraction.schemas import Invoice
    from extraction_pipeline.core.store import LocalObjectStore
    from extraction_pipeline.core.tables.layout import TableSet
    from extraction_pipeline.core.tables.refresh import FeedPosition, refresh_tables

    call = _call_summary()
    now = datetime.now(UTC)

    def outcome(index: int) -> ExtractionRecord:
        record = {**INVOICE, "invoice_number": f"INV-SC-{index:06d}"}
        return ExtractionRecord(
            document_key=f"scan-{index:06d}-{index:012x}",
            file_name=f"scan {index:06d}.pdf",
            sha256=f"{index:064x}",
            pages=1,
            status="extracted",
            record=record,
            call=call,
            extracted_at=now,
            run_id="run",
        )

    n = ctx["documents"]
    store = LocalObjectStore(Path(ctx["workdir"]) / "tables-store")
    tables = TableSet.for_schema(Invoice)
    began = time.perf_counter()
    first = [outcome(i) for i in range(n)]
    build_s = time.perf_counter() - began
    began = time.perf_counter()
    refresh_tables(store, tables, first, position=FeedPosition().advance([1]))
    initial_s = time.perf_counter() - began
    del first
    new = [outcome(i) for i in range(n, n + NEW_FILES)]
    began = time.perf_counter()
    summaries = refresh_tables(store, tables, new, position=FeedPosition().advance([1, 2]))
    refresh_s = time.perf_counter() - began
    rows = {s.name: s.row_count for s in summaries}
    return {
        "build_outcomes_s": round(build_s, 2),
        "initial_refresh_s": round(initial_s, 2),
        "refresh_1000_new_s": round(refresh_s, 3),
        "rows": rows,
        "peak_rss": _peak_rss(),
    }


def stage_event_log(ctx: dict[str, Any]) -> dict[str, Any]:
    from extraction_pipeline.definitions import build_definitions
    from extraction_pipeline.instance.names import RANGE_END_TAG, RANGE_START_TAG

    os.environ["OPENAI_API_KEY"] = API_KEY
    keys = ctx["keys"][:RUN_DOCUMENTS]
    job = build_definitions(_settings(ctx)).resolve_job_def("intake_job")
    size = "SELECT pg_total_relation_size('event_logs')"
    rows = "SELECT count(*) FROM event_logs"
    before = sql_scalar(ctx["pg_url"], size), sql_scalar(ctx["pg_url"], rows)
    with _instance(ctx) as instance:
        began = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            raise_on_error=False,
        )
        run_s = time.perf_counter() - began
    after = sql_scalar(ctx["pg_url"], size), sql_scalar(ctx["pg_url"], rows)
    if not result.success:
        raise RuntimeError("the 200-document intake run failed")
    return {
        "documents": len(keys),
        "run_wall_s": round(run_s, 2),
        "event_log_bytes_per_doc": round((after[0] - before[0]) / len(keys)),
        "event_log_rows_per_doc": round((after[1] - before[1]) / len(keys), 2),
        "event_logs_total_bytes": after[0],
        "event_logs_total_rows": after[1],
        "peak_rss": _peak_rss(),
    }


def stage_tables_caught_up(ctx: dict[str, Any]) -> dict[str, Any]:
    """With --ticks-only no run refreshed the tables, so the idle daemon's tables_automation
    would start a first refresh of N documents: record the tables as refreshed up to the newest
    outcome (as a deployment's incremental refreshes leave them) instead."""
    import dagster as dg

    from extraction_pipeline.defs.tables_sensor import newest_outcome

    with _instance(ctx) as instance:
        newest = newest_outcome(instance) or 0
        instance.report_runless_asset_event(
            dg.AssetMaterialization("documents", metadata={"feed_storage_id": newest})
        )
    return {"peak_rss": _peak_rss()}


IDLE_WARMUP_SECONDS = 45.0  # the code server starts and every sensor has ticked
IDLE_SECONDS = 120.0  # --quick: a quarter of both


def measure_ui(ctx: dict[str, Any], name: str, skipped_by: str | None) -> dict[str, Any]:
    """(i) The UI's asset and partition pages on this instance, in a browser (ui_pages.py),
    unless `skipped_by` names the option that skips them."""
    from ui_pages import browser_missing, measure_pages

    why = skipped_by or browser_missing()
    if why:
        print(f"    skipped: {why}")
        return {"skipped": why}
    visits = 1 if ctx["idle_scale"] < 1 else 2  # --quick: each page once
    return measure_pages(_deployment_env(ctx), Path(ctx["workdir"]) / name, ctx["keys"][0], visits)


def _deployment_env(ctx: dict[str, Any]) -> dict[str, str]:
    """A deployment on this instance with an empty drop folder (taken files are stored; the
    folder can be emptied)."""
    empty_inbox = Path(ctx["workdir"]) / "empty_inbox"
    empty_inbox.mkdir(exist_ok=True)
    return {
        "DAGSTER_HOME": ctx["home"],
        "EXTRACTION_PG_URL": ctx["pg_url"],
        "EXTRACTION_DATA_DIR": ctx["data_dir"],
        "EXTRACTION_INBOX": str(empty_inbox),
        "OPENAI_BASE_URL": ctx["base_url"],
        "OPENAI_API_KEY": API_KEY,
    }


# An hourly `retry_failed` tick falling in the window would launch runs for the staged history's
# failed documents (20,000 at N=1,000,000): work, not idle. The schedules' crons are moved to
# 1 January; the daemon still evaluates them every loop. `runs_launched` shows the window held
# no run.
SCHEDULES_OUT_OF_THE_WINDOW = {
    "EXTRACTION_NIGHTLY_CRON": "0 2 1 1 *",
    "EXTRACTION_RETRY_CRON": "0 3 1 1 *",
}


def measure_idle(ctx: dict[str, Any], postmaster: int | None) -> dict[str, Any]:
    """CPU of the deployment doing nothing, started as `dev` starts it (without the UI): the
    daemon (sensors every few seconds, schedules, run monitoring), the code server, and Postgres
    answering them."""
    env = {**_deployment_env(ctx), **SCHEDULES_OUT_OF_THE_WINDOW}
    runs = "select count(*) from runs"
    runs_before = sql_scalar(ctx["pg_url"], runs)
    workdir = Path(ctx["workdir"]) / f"idle-{time.monotonic_ns()}"
    workdir.mkdir()
    with contextlib.ExitStack() as stack:
        code_server, daemon = start_deployment(env, workdir, stack)
        meter = stack.enter_context(deployment_meter(code_server, daemon))
        database = ctx["pg_url"].rsplit("/", 1)[-1]
        pg = (
            stack.enter_context(ProcessTreeMeter([postmaster], role=_postgres_role(database)))
            if postmaster
            else None
        )
        time.sleep(IDLE_WARMUP_SECONDS * ctx["idle_scale"])
        meter.mark_baseline()
        if pg:
            pg.mark_baseline()
        seconds = IDLE_SECONDS * ctx["idle_scale"]
        time.sleep(seconds)
        by_role = meter.cpu_by_role()
        # The server's own processes and this database's backends; not other databases' (on a
        # shared server, tests may be running).
        postgres_roles = pg.cpu_by_role() if pg else {}
        postgres = sum(cpu for role, cpu in postgres_roles.items() if role != "other database")
        alive = daemon.poll() is None
    launched = sql_scalar(ctx["pg_url"], runs) - runs_before
    share = {role: round(100 * cpu / seconds, 2) for role, cpu in by_role.items()}
    share["postgres"] = round(100 * postgres / seconds, 2)
    return {
        "seconds": seconds,
        "daemon_alive": alive,
        "runs_launched": launched,
        "percent_of_a_core": share,
        "total_percent": round(sum(share.values()), 2),
    }


def _postgres_role(database: str) -> Any:
    def role(process: Any, is_root: bool) -> str:
        try:
            title = " ".join(process.cmdline())
        except Exception:
            return "server"
        if database in title:
            return "this database"
        # A backend's title is "postgres: USER DATABASE HOST(PORT) STATE"; the server's own
        # processes are "postgres: checkpointer", "postgres: walwriter", ...
        return "other database" if "(" in title else "server"

    return role


def in_fresh_process(stage: Any, ctx: dict[str, Any]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result: dict[str, Any] = pool.submit(stage, ctx).result()
    # Each stage's figures as soon as they are known (a run at 1,000,000 takes an hour).
    shown = {k: v for k, v in result.items() if k not in ("keys", "cursor")}
    print(f"    {stage.__name__}: {json.dumps(shown, default=str)}", flush=True)
    return result


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    n = args.documents
    figures: dict[str, Any] = {}
    peaks: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir(args.keep))
        simulator = start_simulator(args.latency, workdir, stack)
        server_url, origin = stack.enter_context(pg_server(args.pg_url, workdir))
        pg_url = stack.enter_context(fresh_database(server_url, "bench_scale"))
        print(f"Postgres: {describe_server(server_url, origin)}")
        home = workdir / "dagster_home"
        inbox, data_dir = workdir / "inbox", workdir / "data"
        for folder in (home, inbox, data_dir):
            folder.mkdir()
        from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE

        (home / "dagster.yaml").write_bytes(INSTANCE_TEMPLATE.read_bytes())
        os.environ["EXTRACTION_PG_URL"] = pg_url  # inherited by the stage processes
        ctx: dict[str, Any] = {
            "home": str(home),
            "inbox": str(inbox),
            "data_dir": str(data_dir),
            "workdir": str(workdir),
            "pg_url": pg_url,
            "base_url": simulator.base_url,
            "documents": n,
            "new_files": NEW_FILES,
            "profile": args.profile,
            "idle_scale": 0.25 if args.quick else 1.0,
            "failed_share": args.failed_share,
        }
        postmaster = postmaster_pid(server_url)
        pg_meter = ProcessTreeMeter([postmaster], root_role="postgres") if postmaster else None
        if pg_meter:
            stack.enter_context(pg_meter)

        print(f"generating {n:,} one-page PDFs ...", flush=True)
        seconds = write_pdfs(inbox, 0, n)
        figures["generate"] = {"seconds": round(seconds, 2), "pdfs_per_s": round(n / seconds)}
        print(f"(a) registering {n:,} documents ...", flush=True)
        register = in_fresh_process(stage_register, ctx)
        ctx["cursor"] = register.pop("cursor")
        peaks["(a) registration"] = register.pop("peak_rss")
        figures["register"] = register
        time.sleep(0.05)
        write_pdfs(inbox, n, NEW_FILES)
        print(f"(b) sensor tick: {NEW_FILES:,} new files in an inbox of {n:,} ...", flush=True)
        tick = in_fresh_process(stage_sensor_tick, ctx)
        ctx["keys"] = tick.pop("keys")
        peaks["(b) sensor tick (code server)"] = tick.pop("peak_rss")
        figures["sensor_tick"] = tick
        print(f"(c) schedule ticks with {n - NEW_FILES:,} materialised ...", flush=True)
        history = in_fresh_process(stage_event_history, ctx)
        peaks["(c) writing the event history"] = history.pop("peak_rss")
        figures["event_history"] = history
        schedule = in_fresh_process(stage_schedule_ticks, ctx)
        peaks["(c) schedule ticks (code server)"] = schedule.pop("peak_rss")
        figures["schedule_ticks"] = schedule
        if not args.ticks_only:
            print(f"(d) table refresh: {NEW_FILES:,} new into {n:,} rows ...", flush=True)
            refresh = in_fresh_process(stage_refresh, ctx)
            peaks["(d) table refresh (run worker)"] = refresh.pop("peak_rss")
            figures["refresh"] = refresh
            print(
                f"(f) event-log growth: a ranged run of {RUN_DOCUMENTS} documents ...", flush=True
            )
            simulator.reset(args.latency)
            growth = in_fresh_process(stage_event_log, ctx)
            peaks["(f) intake run (run worker)"] = growth.pop("peak_rss")
            figures["event_log"] = growth
        else:
            in_fresh_process(stage_tables_caught_up, ctx)
        live = f"{n + NEW_FILES:,} live partitions"
        print(f"(i) the UI's asset and partition pages, {live} ...", flush=True)
        skip = "--no-ui" if args.no_ui else "--no-ui-live" if args.no_ui_live else None
        figures["ui"] = {"live": measure_ui(ctx, "ui-live", skip)}
        print(f"    {json.dumps(figures['ui']['live'])}", flush=True)
        print(f"(h) the idle deployment, {live} ...", flush=True)
        figures["idle_live"] = measure_idle(ctx, postmaster)
        print(f"    {json.dumps(figures['idle_live'])}", flush=True)
        print("(g) archiving settled documents, then the ticks again ...", flush=True)
        archive = in_fresh_process(stage_archive, ctx)
        peaks["(g) archiving (code server)"] = archive.pop("peak_rss")
        figures["archive"] = archive
        left = f"{archive['live_after']:,} live partitions after archiving"
        print(f"(b) again: {NEW_FILES:,} new files in an emptied drop folder, {left} ...")
        emptied = Path(ctx["workdir"]) / "emptied_inbox"
        emptied.mkdir()
        write_pdfs(emptied, n + NEW_FILES, NEW_FILES)
        time.sleep(0.05)
        emptied_ctx = {
            **ctx,
            "inbox": str(emptied),
            "cursor": None,
            "archive_after_days": ARCHIVE_AFTER_DAYS,
        }
        again = in_fresh_process(stage_sensor_tick, emptied_ctx)
        ctx["keys"] += again.pop("keys")
        peaks["(b) sensor tick (code server)"] = max(
            peaks["(b) sensor tick (code server)"], again.pop("peak_rss")
        )
        figures["sensor_tick_emptied_folder"] = again
        print(f"(i) the UI's asset and partition pages, {left} ...", flush=True)
        skip = "--no-ui" if args.no_ui else None
        figures["ui"]["after_archive"] = measure_ui(ctx, "ui-archived", skip)
        print(f"    {json.dumps(figures['ui']['after_archive'])}", flush=True)
        print(f"(h) the idle deployment, {left} ...", flush=True)
        figures["idle"] = measure_idle(ctx, postmaster)
        for stage in figures["ui"].values():
            if "webserver_peak_rss_bytes" in stage:
                peaks["(i) webserver"] = max(
                    peaks.get("(i) webserver", 0), stage.pop("webserver_peak_rss_bytes")
                )
        peaks["benchmark driver"] = _peak_rss()
        if pg_meter:
            for role, rss in pg_meter.peak_rss_by_role().items():
                peaks[f"Postgres {'server' if role == 'postgres' else 'backend/worker'}"] = rss
            peaks["Postgres processes seen"] = pg_meter.process_count()

    figures["peak_rss_bytes"] = peaks
    _report(n, figures, peaks)
    write_results("scale", figures, {"documents": n, "new_files": NEW_FILES, "quick": args.quick})
    return 0


def _report(n: int, figures: dict[str, Any], peaks: dict[str, int]) -> None:
    reg, tick, sched = figures["register"], figures["sensor_tick"], figures["schedule_ticks"]
    skipped = {"refresh_1000_new_s": "-", "initial_refresh_s": "-"}  # --ticks-only
    refresh = figures.get("refresh", skipped)
    growth = figures.get(
        "event_log", {"event_log_bytes_per_doc": "-", "event_log_rows_per_doc": "-"}
    )
    archive = figures["archive"]
    after = archive["after"]
    print_table(
        f"Scale: N={n:,} documents ({NEW_FILES:,} new)",
        [
            (
                "generate PDFs, s",
                figures["generate"]["seconds"],
                f"{figures['generate']['pdfs_per_s']:,}/s",
            ),
            ("(a) register, s", reg["register_s"], f"{reg['register_docs_per_s']:,}/s"),
            (
                "(a) add partitions (1,000/call), s",
                reg["add_partitions_s"],
                f"{reg['add_partitions_keys_per_s']:,}/s",
            ),
            ("(a) get_dynamic_partitions, s", reg["get_dynamic_partitions_s"], ""),
            ("(b) sensor tick (adds its partitions), s", tick["sensor_tick_s"], "target <= 2"),
            (
                "(b) of which listing the drop folder, s",
                tick["listing_folder_s"],
                f"{tick['files_in_folder']:,} files in it",
            ),
            (
                "(b) daemon: has_dynamic_partition per requested key, s",
                tick["daemon_has_partition_s"],
                f"{tick['requested_keys']} keys requested",
            ),
            ("(b) daemon: add_dynamic_partitions, s", tick["daemon_add_partitions_s"], ""),
            (
                "(b) again after (g), the drop folder emptied: tick, s",
                figures["sensor_tick_emptied_folder"]["sensor_tick_s"],
                "target <= 2; "
                f"{figures['sensor_tick_emptied_folder']['files_in_folder']:,} files in it",
            ),
            ("(b) tick + daemon, s", tick["tick_plus_daemon_s"], "target <= 2"),
            (
                "(c) nightly_intake tick, s",
                sched["nightly_intake_tick_s"],
                f"{sched['nightly_intake_run_requests']} runs",
            ),
            (
                "(c) retry_failed tick, s",
                sched["retry_failed_tick_s"],
                f"{sched['retry_failed_run_requests']} runs",
            ),
            (
                "(c) tables_automation: first / next tick, s",
                f"{sched['tables_automation_first_s']} / {sched['tables_automation_next_s']}",
                f"target <= 2; {sched['tables_automation_first_requests']} + "
                f"{sched['tables_automation_next_requests']} refreshes asked",
            ),
            ("(d) refresh 1,000 into N rows, s", refresh["refresh_1000_new_s"], "target <= 5"),
            ("(d) initial refresh of N rows, s", refresh["initial_refresh_s"], ""),
            ("(f) event log bytes / document", growth["event_log_bytes_per_doc"], ""),
            ("(f) event log rows / document", growth["event_log_rows_per_doc"], ""),
            (
                f"(g) archive_settled tick at {archive['live_before']:,} live, s",
                archive["archive_tick_s"],
                f"{archive['archive_tick_archived']} archived by the sensor itself",
            ),
            (
                "(g) archive every settled document, s",
                archive["archive_all_s"],
                f"{archive['archive_all_per_s']:,}/s",
            ),
            ("(g) live partitions left", archive["live_after"], str(archive["kept"])),
            (
                "(g) then: the UI's read of both assets' partition status, s",
                archive["status_read_s"],
                f"after 1,000 new files: {figures['sensor_tick_emptied_folder']['status_read_s']}",
            ),
            (
                "(g) then: nightly / retry tick, s",
                f"{after['nightly_intake_tick_s']} / {after['retry_failed_tick_s']}",
                f"{after['nightly_intake_run_requests']} + "
                f"{after['retry_failed_run_requests']} runs",
            ),
            (
                "(g) then: tables_automation first / next, s",
                f"{after['tables_automation_first_s']} / {after['tables_automation_next_s']}",
                "",
            ),
            *_idle_row("(h) idle deployment, live set", figures["idle_live"]),
            *_idle_row("(h) idle deployment, after archiving", figures["idle"]),
        ],
    )
    for label, ui in figures["ui"].items():
        if "skipped" in ui:
            print(f"\n(i) UI pages ({label}): skipped, {ui['skipped']}")
            continue
        print_table(
            f"(i) UI pages, {label.replace('_', ' ')}: load s (1st / 2nd visit), target <= "
            f"{ui['target_s']:g}; webserver CPU {ui['webserver_cpu_s']} s",
            [
                (
                    name,
                    " / ".join(
                        f"> {v['load_s']:g} (timed out)" if v["timed_out"] else str(v["load_s"])
                        for v in visits
                    ),
                    f"{visits[0]['graphql_queries']} queries, slowest {visits[0]['slowest_query']}"
                    f" {visits[0]['slowest_query_s']} s",
                )
                for name, visits in ui["pages"].items()
            ],
        )
    print_table(
        "Peak RSS per process, MiB (target <= 1024)",
        [
            (name, round(value / 2**20, 1) if "seen" not in name else value)
            for name, value in peaks.items()
        ],
    )
    worst = max(v for k, v in peaks.items() if "seen" not in k)
    print(
        f"\nratios to target: sensor tick {tick['tick_plus_daemon_s'] / 2:.2f}, nightly tick "
        f"{sched['nightly_intake_tick_s'] / 2:.2f}, "
        f"refresh {refresh['refresh_1000_new_s']} / 5, peak RSS {worst / GIB:.2f}"
    )


def _idle_row(label: str, idle: dict[str, Any]) -> list[tuple[str, Any, str]]:
    shares = ", ".join(f"{k} {v}" for k, v in idle["percent_of_a_core"].items())
    shares += f"; runs launched in the window: {idle['runs_launched']}"
    return [
        (f"{label}, % of a core ({idle['seconds']:.0f} s)", idle["total_percent"], shares),
    ]


if __name__ == "__main__":
    sys.exit(main())
