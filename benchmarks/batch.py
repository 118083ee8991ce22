"""Batch mode against online mode: the same N invoices, the same tables, half the token cost.

Two deployments side by side (their own Postgres database and data dir, one model simulator):
online, every document extracted by `ingest`'s in-process runs; batch, the same documents
submitted by batch-mode runs, the `batch_poller` sensor evaluated as the daemon would until
every batch has ended, and the collecting runs it asks for executed. Checks before printing:
every document extracted in both (tables hold N rows), the invoice tables equal field by field,
and no document paid for twice within a mode; then prints the cost of each and their ratio.

    .venv/bin/python benchmarks/batch.py            # N=500
    .venv/bin/python benchmarks/batch.py --quick    # N=20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from common import (
    API_KEY,
    PROJECT_ROOT,
    describe_server,
    fresh_database,
    make_corpus,
    pg_server,
    print_table,
    scratch_dir,
    start_simulator,
    write_results,
)

from extraction_pipeline.cli.ingest import QUIET_RUN_CONFIG, ingest, plan_ingest
from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE, Environment
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.definitions import build_definitions
from extraction_pipeline.instance.batches import batch_entries, documents_in_open_batches
from extraction_pipeline.instance.names import MODE_TAG, TABLE_KEYS

# Fields that differ by design between two extractions of the same document.
PER_RUN = {"run_id", "extracted_at"}


def deployment(workdir: Path, name: str, pg_url: str, base_url: str) -> tuple[Environment, Any]:
    home = workdir / name / "home"
    home.mkdir(parents=True)
    shutil.copy(INSTANCE_TEMPLATE, home / "dagster.yaml")
    os.environ["EXTRACTION_PG_URL"] = pg_url  # read when the instance is created
    settings = Settings.from_env(
        {
            "EXTRACTION_DATA_DIR": str(workdir / name / "data"),
            "OPENAI_BASE_URL": base_url,
            "EXTRACTION_MAX_CONCURRENCY": "16",
        }
    )
    return Environment(PROJECT_ROOT, home, settings), dg.DagsterInstance.from_config(str(home))


def run_online(environment: Environment, instance: Any, files: list[Path]) -> float:
    started = time.monotonic()
    summary = ingest(instance, environment, files, progress=io.StringIO())
    assert not summary.failed, summary.failed
    return time.monotonic() - started


def run_batch(environment: Environment, instance: Any, files: list[Path]) -> tuple[float, int]:
    """Submit, poll as the daemon would, collect; seconds until the tables hold every answer."""
    started = time.monotonic()
    defs = build_definitions(environment.settings)
    plan = plan_ingest(instance, environment.settings, files, {MODE_TAG: "batch"}, 200)
    for run in plan.runs:
        execute(defs, instance, run.job_name, run.partition_key, run.run_tags)
    sensor = defs.resolve_sensor_def("batch_poller")
    resources = {"extraction_agent": defs.resources["extraction_agent"]}
    while documents_in_open_batches(instance):
        with dg.build_sensor_context(
            instance=instance, definitions=defs, resources=resources
        ) as context:
            result = sensor(context)
        if isinstance(result, dg.SensorResult) and result.run_requests:
            for event in result.asset_events or []:
                instance.report_runless_asset_event(event)
            for request in result.run_requests:
                execute(defs, instance, "extraction_job", request.partition_key, request.tags)
        else:
            time.sleep(0.5)
    execute(defs, instance, None, None, {})
    return time.monotonic() - started, len(batch_entries(instance))


def execute(
    defs: dg.Definitions,
    instance: Any,
    job: str | None,
    partition: str | None,
    tags: Any,
) -> None:
    if job is None:  # the tables, as `ingest` refreshes them at its end
        defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=list(TABLE_KEYS),
            raise_on_error=False,
            run_config=QUIET_RUN_CONFIG,
        )
        return
    defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        partition_key=partition,
        tags=dict(tags),
        raise_on_error=False,
        run_config=QUIET_RUN_CONFIG,
    )


def table(environment: Environment, name: str) -> dict[str, dict[str, Any]]:
    path = environment.settings.data_dir / "tables" / f"{name}.parquet"
    rows = pq.read_table(io.BytesIO(path.read_bytes())).to_pylist()
    return {row["document_key"]: row for row in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=20")
    parser.add_argument("--documents", type=int, default=None)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    count = args.documents or (20 if args.quick else 500)
    os.environ["OPENAI_API_KEY"] = API_KEY
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir(args.keep))
        simulator = start_simulator(0.05, workdir, stack)
        simulator.control.configure(batch_phase_seconds=1.0)
        server_url, origin = stack.enter_context(pg_server(args.pg_url, workdir))
        print(f"Postgres: {describe_server(server_url, origin)}; N={count}")
        files, pages = make_corpus(workdir / "corpus", count)
        online_env, online = deployment(
            workdir,
            "online",
            stack.enter_context(fresh_database(server_url, "bench_online")),
            simulator.base_url,
        )
        online_s = run_online(online_env, online, files)
        # Each mode on its own ledger: no document may be paid for twice within a mode.
        assert simulator.control.requests()["paid_twice"] == []
        simulator.control.reset()
        simulator.control.configure(latency_seconds=0.05, batch_phase_seconds=1.0)
        batch_env, batch = deployment(
            workdir,
            "batch",
            stack.enter_context(fresh_database(server_url, "bench_batch")),
            simulator.base_url,
        )
        batch_s, batches = run_batch(batch_env, batch, files)
        online.dispose()
        batch.dispose()
        ledger = simulator.control.requests()
        online_docs, batch_docs = table(online_env, "documents"), table(batch_env, "documents")
        online_invoices = table(online_env, "invoices")
        batch_invoices = table(batch_env, "invoices")

    assert len(online_docs) == len(batch_docs) == count, (len(online_docs), len(batch_docs))
    assert {r["status"] for r in batch_docs.values()} <= {"extracted", "needs_review"}
    same = all(
        {k: v for k, v in online_invoices[key].items() if k not in PER_RUN}
        == {k: v for k, v in batch_invoices[key].items() if k not in PER_RUN}
        for key in online_invoices
    )
    assert same and online_invoices.keys() == batch_invoices.keys(), "the invoice tables differ"
    assert ledger["paid_twice"] == [], ledger["paid_twice"]
    online_cost = sum(r["cost_usd"] for r in online_docs.values())
    batch_cost = sum(r["cost_usd"] for r in batch_docs.values())
    figures = {
        "documents": count,
        "pages": pages,
        "online": {"wall_s": round(online_s, 2), "cost_usd": round(online_cost, 6)},
        "batch": {
            "wall_s": round(batch_s, 2),
            "cost_usd": round(batch_cost, 6),
            "batches": batches,
        },
        "cost_ratio_batch_over_online": round(batch_cost / online_cost, 4),
        "invoice_tables_equal": 1 if same else 0,
    }
    print_table(
        f"Batch mode against online mode, N={count} invoices ({pages} pages)",
        [
            ("online: wall time, s", figures["online"]["wall_s"]),
            ("online: token cost, USD", online_cost),
            ("batch: submit to last row, s (simulator phases 1 s)", figures["batch"]["wall_s"]),
            ("batch: token cost, USD", batch_cost),
            ("batch: batches", batches),
            ("cost batch / online", figures["cost_ratio_batch_over_online"]),
            ("invoice tables equal (fields)", "yes" if same else "no"),
        ],
    )
    write_results("batch", figures, {"documents": count, "simulator_latency_s": 0.05})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
