"""Scale-out: the same drop extracted by 1, 2 and 4 Celery workers (dagster-celery's run
launcher), with the data dir on a loopback S3-compatible server (SeaweedFS), the broker on this
machine (RabbitMQ on 127.0.0.1:5672, else Redis on 6379) and a fresh Postgres database per case.

Per case: the daemon and W workers (`--concurrency 1`: one run each at a time) start, then N
invoices are dropped into the inbox at once; the figure is drop -> every invoice's row in
`invoices.parquet` in object storage. Default settings otherwise (runs of up to 200 documents,
so N=800 is four runs), EXTRACTION_RUN_SLOTS = W, and the model's limits for the whole
deployment: EXTRACTION_MAX_CONCURRENCY = concurrency across all workers. Self-checks (exit 1
when one fails): N model calls, peak in flight <= concurrency, N invoice rows.

On one 2-core machine the workers share the cores, the model's concurrency cap and one Postgres:
the figures show what the machinery costs and that work spreads, not what more hosts would add.

    .venv/bin/python benchmarks/scale_out.py              # N=800, workers 1, 2, 4
    .venv/bin/python benchmarks/scale_out.py --quick      # N=40, workers 1, 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    BIN,
    describe_server,
    drop_files,
    exit_on_sigterm,
    fresh_database,
    make_corpus,
    pg_server,
    print_table,
    scratch_dir,
    start_process,
    start_simulator,
    wait_for,
    write_results,
)

RECEIVED = re.compile(r"Task execute_job\[([0-9a-f-]+)\] received")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=40, workers 1 and 2")
    parser.add_argument("-n", "--documents", type=int, default=None, help="default 800")
    parser.add_argument("--workers", default=None, help="comma-separated, default 1,2,4")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    args.documents = args.documents or (40 if args.quick else 800)
    args.workers = [int(w) for w in (args.workers or ("1,2" if args.quick else "1,2,4")).split(",")]
    return args


def run_case(
    workers: int, args: argparse.Namespace, paths: list[Path], base: dict[str, Any]
) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
    from extraction_pipeline.core.settings import Settings
    from extraction_pipeline.instance.instance_yaml import instance_yaml
    from extraction_pipeline.instance.stores import open_store

    workdir: Path = base["workdir"] / f"workers-{workers}"
    home, inbox = workdir / "dagster_home", workdir / "inbox"
    for folder in (home, inbox):
        folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        pg_url = stack.enter_context(fresh_database(base["server_url"], "bench_scale_out"))
        simulator = start_simulator(args.latency, workdir, stack)
        data_url = base["object_server"].url(f"scale-out-{uuid.uuid4().hex[:8]}")
        queue = f"scale-out-{uuid.uuid4().hex[:8]}"
        env = {
            "DAGSTER_HOME": str(home),
            "EXTRACTION_PG_URL": pg_url,
            "EXTRACTION_DATA_DIR": data_url,
            "EXTRACTION_INBOX": str(inbox),
            "EXTRACTION_CELERY_BROKER": base["broker"],
            "EXTRACTION_CELERY_QUEUE": queue,
            "EXTRACTION_RUN_SLOTS": str(workers),
            "EXTRACTION_MAX_CONCURRENCY": str(args.concurrency),
            "OPENAI_BASE_URL": simulator.base_url,
            "OPENAI_API_KEY": API_KEY,
            **base["object_server"].client_env(),
        }
        (home / "dagster.yaml").write_text(
            instance_yaml(INSTANCE_TEMPLATE.read_text(), Settings.from_env(env))
        )
        logs = [workdir / f"worker{number}.log" for number in range(1, workers + 1)]
        for number, log in enumerate(logs, 1):
            command = [
                sys.executable, "-m", "celery", "-A", "extraction_pipeline.instance.celery_app",
                "worker", "-Q", queue, "-n", f"worker{number}@%h", "--concurrency", "1",
                "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            ]  # fmt: skip
            start_process(command, env, log, stack)
        start_process([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env,
                      workdir / "daemon.log", stack)  # fmt: skip
        wait_for(lambda: all("ready." in log.read_text() for log in logs), 120, "the workers")
        time.sleep(5)  # the daemon's first sensor tick
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        store = open_store(data_url, {"EXTRACTION_PG_URL": pg_url})

        def rows() -> int:
            if not store.exists("tables/invoices.parquet"):
                return 0
            data = store.get("tables/invoices.parquet")
            return pq.read_table(io.BytesIO(data), columns=["document_key"]).num_rows

        began = time.monotonic()
        drop_files(paths, inbox)
        wait_for(lambda: rows() >= len(paths), 1800, "every invoice's row", interval=0.5)
        seconds = time.monotonic() - began
        requests = simulator.control.requests()
        runs_per_worker = [len(set(RECEIVED.findall(log.read_text()))) for log in logs]
        figures = {
            "workers": workers,
            "seconds": round(seconds, 2),
            "docs_per_s": round(len(paths) / seconds, 2),
            "model_calls": requests["count"],
            "peak_in_flight": requests["peak_in_flight"],
            "invoice_rows": rows(),
            "runs_per_worker": runs_per_worker,
        }
    return figures


def main(argv: list[str] | None = None) -> int:
    from extraction_pipeline.cli.cluster import local_broker
    from extraction_pipeline.instance.object_server import ObjectServer

    args = parse_args(argv)
    exit_on_sigterm()
    broker = local_broker()
    if broker is None:
        raise SystemExit("no RabbitMQ on 127.0.0.1:5672 and no Redis on 6379: nothing to measure")
    cases: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(scratch_dir(args.keep))
        server_url, origin = stack.enter_context(pg_server(args.pg_url, workdir))
        print(f"Postgres: {describe_server(server_url, origin)}; broker {broker.split('@')[-1]}")
        object_server = ObjectServer(workdir / "seaweedfs").start()
        stack.callback(object_server.stop)
        paths, _ = make_corpus(workdir / "corpus", args.documents)
        base = {
            "workdir": workdir,
            "server_url": server_url,
            "broker": broker,
            "object_server": object_server,
        }
        for workers in args.workers:
            print(f"{workers} worker(s): {args.documents} invoices ...", flush=True)
            cases.append(run_case(workers, args, paths, base))
    checks = {
        f"{c['workers']} workers: {name}": ok
        for c in cases
        for name, ok in (
            ("model calls = N", c["model_calls"] == args.documents),
            ("peak in flight <= cap", c["peak_in_flight"] <= args.concurrency),
            ("invoice rows = N", c["invoice_rows"] == args.documents),
        )
    }
    print_table(
        f"Scale-out: N={args.documents}, latency {args.latency} s, concurrency {args.concurrency} "
        "(deployment-wide)",
        [
            (c["workers"], c["seconds"], c["docs_per_s"], c["peak_in_flight"], c["runs_per_worker"])
            for c in cases
        ],
        header=("workers", "seconds", "docs/s", "peak in flight", "runs per worker"),
    )
    failed = [name for name, ok in checks.items() if not ok]
    print("self-checks: " + ("passed" if not failed else "FAILED: " + "; ".join(failed)))
    write_results(
        "scale_out",
        {"cases": cases, "self_checks": checks},
        {"documents": args.documents, "latency": args.latency, "concurrency": args.concurrency},
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
