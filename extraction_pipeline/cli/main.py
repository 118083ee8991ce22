"""The `extraction-pipeline` console script: argument parsing only; the work lives elsewhere."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from extraction_pipeline.cli.cluster import NoBroker
    from extraction_pipeline.cli.launcher import ProjectNotFound
    from extraction_pipeline.core.settings import SettingsError
    from extraction_pipeline.instance.stores import StoreConfigurationError

    try:
        return _run(argv)
    except (ProjectNotFound, SettingsError, StoreConfigurationError, NoBroker) as error:
        # A setting or the place it was run from is wrong: say which, no traceback (exit 2).
        print(f"extraction-pipeline: error: {error}", file=sys.stderr)
        return 2


def _run(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="extraction-pipeline",
        description="PDF documents to validated, structured records, on Dagster and Postgres.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser(
        "dev", help="run the Dagster UI, daemon, sensor and schedules (the main job)"
    )
    dev.add_argument("--host", default=os.environ.get("EXTRACTION_UI_HOST", "127.0.0.1"))
    dev.add_argument("--port", type=int, default=int(os.environ.get("EXTRACTION_UI_PORT", "3000")))
    dev.add_argument(
        "--storage",
        choices=["local", "s3"],
        default="local",
        help="s3: keep the data dir in a loopback S3-compatible server (SeaweedFS) started too",
    )
    dev.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the runs on this many Celery workers (needs a broker: EXTRACTION_CELERY_BROKER, "
        "or RabbitMQ/Redis on this machine)",
    )

    demo = commands.add_parser("demo", help="copy sample invoice PDFs into the drop folder")
    demo.add_argument("--count", type=int, default=6, help="how many invoices (default 6)")

    history = commands.add_parser(
        "history", help="every attempt at a document: time, run, retries, outcome, error, cost"
    )
    history.add_argument("document", help="partition key, SHA-256 (or 8+ hex) or file name")
    history.add_argument("--json", action="store_true", help="machine-readable output")
    history.add_argument("--verbose", action="store_true", help="library warnings on the terminal")

    status = commands.add_parser("status", help="documents by state, with the cost so far")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--verbose", action="store_true", help="library warnings on the terminal")

    archive = commands.add_parser(
        "archive",
        help="remove the partitions of settled documents (history and table rows stay)",
    )
    archive.add_argument(
        "--after-days",
        type=float,
        default=None,
        help="settled documents registered this many days ago or more "
        "(default: EXTRACTION_ARCHIVE_AFTER_DAYS)",
    )
    archive.add_argument("--dry-run", action="store_true", help="say what would go; remove none")
    archive.add_argument("--json", action="store_true", help="machine-readable output")
    archive.add_argument("--verbose", action="store_true", help="library warnings on the terminal")

    ingest = commands.add_parser(
        "ingest", help="register and extract the PDFs under PATH now (a scripted backfill)"
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="PDF files or folders")
    ingest.add_argument("--json", action="store_true", help="machine-readable summary")
    ingest.add_argument(
        "--verbose", action="store_true", help="Dagster's event lines and library warnings too"
    )
    ingest.add_argument(
        "--background",
        action="store_true",
        help="queue the runs on the daemon of a running `dev` and print their ids at once",
    )

    runs = commands.add_parser("runs", help="runs queued in the background: status, wait")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True)
    for name, help_text in (
        ("status", "a run's status and its documents' outcomes, from any process"),
        ("wait", "wait until a run (and its retries) ends; exit 0 if it succeeded"),
    ):
        runs_command = runs_commands.add_parser(name, help=help_text)
        runs_command.add_argument("run_ids", nargs="+", metavar="RUN_ID")
        runs_command.add_argument("--json", action="store_true", help="machine-readable output")
        runs_command.add_argument("--verbose", action="store_true", help="library warnings too")
    runs_commands.choices["wait"].add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds (exit 3)"
    )

    batch = commands.add_parser(
        "batch", help="the OpenAI Batch API at half the token price: submit, status, retrieve"
    )
    batch_commands = batch.add_subparsers(dest="batch_command", required=True)
    submit = batch_commands.add_parser(
        "submit", help="submit the PDFs under PATH (or every pending document) as batches"
    )
    submit.add_argument("paths", nargs="*", metavar="PATH", help="PDF files or folders")
    submit.add_argument(
        "--pending", action="store_true", help="every registered document never attempted"
    )
    for name, help_text in (
        ("status", "a batch's status and counts (default: the last submitted)"),
        ("retrieve", "write a batch's records as JSON files (default: the last submitted)"),
        ("cancel", "cancel a batch; what it answered is kept, the rest resubmitted"),
    ):
        batch_command = batch_commands.add_parser(name, help=help_text)
        batch_command.add_argument("--batch-id", default=None, help="default: the last submitted")
    batch_commands.choices["retrieve"].add_argument(
        "--out", default=None, help="folder for the JSON files (default: ./batch-<id>)"
    )
    batch_commands.add_parser("list", help="every batch: id, documents, status")
    for batch_command in batch_commands.choices.values():
        batch_command.add_argument("--json", action="store_true", help="machine-readable output")
        batch_command.add_argument("--verbose", action="store_true", help="library warnings too")

    commands.add_parser(
        "dg",
        help="Dagster's dg CLI (dg launch, dg list defs...) on this deployment's instance",
        add_help=False,
    )
    commands.add_parser(
        "simulate-model",
        help="serve the OpenAI-compatible model simulator on loopback (see --help)",
        add_help=False,
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dg"]:
        from extraction_pipeline.cli.launcher import run_dg

        return run_dg(argv[1:])
    if argv[:1] == ["simulate-model"]:
        from extraction_pipeline.simulator.server import main as simulate_model

        return simulate_model(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "dev":
        from extraction_pipeline.cli.launcher import run_dev

        return run_dev(args.host, args.port, storage=args.storage, workers=args.workers)
    if args.command == "demo":
        return _demo(args.count)
    if args.command in ("history", "status", "archive", "ingest", "runs", "batch"):
        from extraction_pipeline.cli import commands as operations

        with operations.library_noise_to_log(args.verbose):
            if args.command == "history":
                return operations.history(args.document, args.json)
            if args.command == "status":
                return operations.status(args.json)
            if args.command == "archive":
                return operations.archive(args.after_days, args.dry_run, args.json)
            if args.command == "runs":
                from extraction_pipeline.cli import runs as runs_cli

                return runs_cli.main(args)
            if args.command == "batch":
                from extraction_pipeline.cli import batch as batch_cli

                return batch_cli.main(args)
            if args.background:
                from extraction_pipeline.cli import runs as runs_cli

                return runs_cli.ingest_in_background(args.paths, args.json)
            return operations.ingest(args.paths, args.json, args.verbose)
    parser.error(f"unknown command {args.command}")
    return 2


def _demo(count: int) -> int:
    from extraction_pipeline.cli.samples import write_demo_documents
    from extraction_pipeline.core.intake.sources import open_inbox
    from extraction_pipeline.core.settings import Settings

    inbox = open_inbox(Settings.from_env().inbox)
    names = write_demo_documents(inbox, count=count)
    for name in names:
        print(f"  {name}")
    print(f"{len(names)} sample invoices are in {inbox.location}; the inbox sensor picks them up.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
