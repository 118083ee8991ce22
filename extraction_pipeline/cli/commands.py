"""The operator commands of the CLI: history, status, archive and ingest (output formatting
only)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator

from extraction_pipeline.cli.launcher import (
    local_instance,
    model_simulator_if_no_key,
    resolve_environment,
)
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.operations.lifecycle import RetryPolicy
from extraction_pipeline.instance.stores import open_store

CLI_LOG = "logs/cli.log"  # under DAGSTER_HOME


@contextlib.contextmanager
def library_noise_to_log(verbose: bool) -> Iterator[None]:
    """Library warnings (Dagster's deprecation and preview notes, ...) go to DAGSTER_HOME/logs/
    cli.log instead of the terminal, so a command prints its own output only; `--verbose`
    leaves them on the terminal."""
    if verbose:
        yield
        return
    path = resolve_environment().dagster_home / CLI_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    captured = logging.getLogger("py.warnings")
    captured.addHandler(handler)
    captured.propagate = False
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        captured.removeHandler(handler)
        handler.close()


def history(document: str, as_json: bool) -> int:
    from extraction_pipeline.instance.history import document_history

    with local_instance(dict(os.environ)) as (instance, environment):
        registry = DocumentRegistry(open_store(environment.settings.data_dir))
        matches = registry.find(document)
        if not matches:
            print(f"no document matches {document!r} (a key, a SHA-256 or a file name)")
            return 2
        reports = []
        for record in matches:
            attempts = document_history(instance, record.document_key)
            reports.append((record, attempts))
    if as_json:
        payload = [
            {
                "document_key": record.document_key,
                "file_name": record.file_name,
                "sha256": record.sha256,
                "aliases": list(record.aliases),
                "attempts": [attempt.to_json() for attempt in attempts],
            }
            for record, attempts in reports
        ]
        print(json.dumps(payload if len(payload) > 1 else payload[0], indent=2))
        return 0
    for record, attempts in reports:
        print(f"{record.document_key}  ({record.file_name}, sha256 {record.sha256[:16]}…)")
        if not attempts:
            print("  no attempt yet")
        total = 0.0
        for a in attempts:
            paid = 0.0 if a.cache_hit else (a.cost_usd or 0.0)
            total += paid if a.asset == "extraction" else 0.0
            lineage = f"run retry {a.run_retry_number}" if a.run_retry_number else "first run"
            tokens = f"{a.input_tokens}+{a.output_tokens} tok" if a.input_tokens is not None else ""
            cost = "reused" if a.cache_hit else (f"${a.cost_usd:.5f}" if a.cost_usd else "")
            print(
                f"  {a.time:%Y-%m-%d %H:%M:%S}  run {a.run_id[:8]}  {a.job:<14} "
                f"{lineage}, step try {a.step_attempt}  {a.asset:<15} {a.outcome:<12} "
                f"{tokens:>14} {cost:>9}  [{a.trigger}]"
            )
            if a.error:
                print(f"      error ({a.error_kind}): {a.error}")
        print(f"  paid for this document: ${total:.5f}")
    return 0


def status(as_json: bool) -> int:
    from extraction_pipeline.instance.status import status_report

    with local_instance(dict(os.environ)) as (instance, environment):
        policy = RetryPolicy(max_attempts=environment.settings.operations.max_attempts)
        store = open_store(environment.settings.data_dir)
        report = status_report(instance, store, policy)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(f"{report.total} documents, as of {report.as_of:%Y-%m-%d %H:%M:%S} UTC")
    for state, count in report.counts.items():
        print(f"  {state.replace('_', ' '):<13} {count:>7}")
    print(f"  cost so far   ${report.cost_usd:.4f} (every attempt, as of the last table refresh)")
    if report.dead_letters:
        print("dead letters (need a person):")
        for letter in report.dead_letters:
            print(f"  {letter.document_key}  {letter.error_kind}: {letter.error[:100]}")
    return 0


def archive(after_days: float | None, dry_run: bool, as_json: bool) -> int:
    from datetime import UTC, datetime, timedelta

    from extraction_pipeline.instance.archive import archive_settled

    with local_instance(dict(os.environ)) as (instance, environment):
        operations = environment.settings.operations
        days = operations.archive_after_days if after_days is None else after_days
        if days <= 0 and after_days is None:
            print(
                "archiving is off (EXTRACTION_ARCHIVE_AFTER_DAYS=0): say how old a settled "
                "document must be with --after-days DAYS",
                file=sys.stderr,
            )
            return 2
        report = archive_settled(
            instance,
            open_store(environment.settings.data_dir),
            datetime.now(UTC),
            timedelta(days=days),
            dry_run=dry_run,
        )
    verb = "would archive" if dry_run else "archived"
    if as_json:
        payload = {
            "dry_run": dry_run,
            "after_days": days,
            "live_before": report.live_before,
            "archived": report.archived,
            "kept": report.kept,
        }
        print(json.dumps(payload, indent=2))
        return 0
    kept = ", ".join(f"{n} {reason}" for reason, n in sorted(report.kept.items()))
    print(
        f"{verb} {len(report.archived)} of {report.live_before} documents (settled, registered "
        f"{days:g} days ago or more); kept: {kept or 'none'}"
    )
    return 0


def ingest(paths: list[str], as_json: bool, verbose: bool = False) -> int:
    from extraction_pipeline.cli.ingest import format_summary, pdfs_to_take
    from extraction_pipeline.cli.ingest import ingest as run_ingest

    found = pdfs_to_take(paths)
    if found is None:
        return 2
    files, missing = found
    env = dict(os.environ)
    with model_simulator_if_no_key(env) as simulator:
        if simulator is not None:
            print("OPENAI_API_KEY is not set: extracting with the MODEL SIMULATOR", file=sys.stderr)
        os.environ.update({k: env[k] for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY") if k in env})
        with local_instance(env) as (instance, environment):
            summary = run_ingest(instance, environment, files, verbose=verbose)
    print(json.dumps(summary.to_json(), indent=2) if as_json else format_summary(summary))
    return 1 if summary.failed or missing else 0
