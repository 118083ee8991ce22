"""`extraction-pipeline ingest PATH...`: the scripted twin of a UI backfill.

The PDFs under the paths are registered like the inbox sensor would, added as partitions, and
materialised in-process through the same instance, jobs and stores: the same history, the same
tables, the same dead letters (no run-status sensor sees an in-process run, so each run is
settled here by the sensors' own `settle_run`). Progress goes to stderr; the summary to stdout;
the exit code says whether any failed. `plan_ingest` (registration, partitions, the runs to
make) is shared with `ingest --background`, which queues the same runs on the daemon of a
running `dev` instead (`cli/runs.py`).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import dagster as dg

from extraction_pipeline.cli.launcher import Environment
from extraction_pipeline.core.documents.pdf import UnreadablePdf, check_pdf
from extraction_pipeline.core.documents.registry import DocumentRegistry, RegistrationOutcome
from extraction_pipeline.core.extraction.records import ExtractionRecord, RecordStore
from extraction_pipeline.core.operations.lifecycle import contiguous_batches
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.definitions import build_definitions
from extraction_pipeline.defs.run_sensors import settle_run
from extraction_pipeline.instance.document_runs import DocumentsRun
from extraction_pipeline.instance.names import (
    DOCUMENTS_PARTITIONS_NAME,
    TABLE_KEYS,
    TRIGGER_TAG,
    WORKER_HOST_TAG,
)
from extraction_pipeline.instance.stores import open_store

log = logging.getLogger(__name__)
# The runs' console logger (Dagster's default) set to CRITICAL: the CLI prints its own progress
# and summary; every event still goes to the event log.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class IngestSummary:
    files: int = 0
    extracted: int = 0
    needs_review: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    reused: int = 0
    wall_seconds: float = 0.0
    run_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "failed_count": len(self.failed)}


def find_pdfs(paths: Iterable[str]) -> tuple[list[Path], list[str]]:
    """PDF files named or found (recursively) under `paths`; and the paths that do not exist."""
    found: list[Path] = []
    missing: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".pdf"
            )
        elif path.is_file():
            found.append(path)
        else:
            missing.append(raw)
    return list(dict.fromkeys(found)), missing


def pdfs_to_take(paths: Iterable[str]) -> tuple[list[Path], list[str]] | None:
    """`find_pdfs`, saying on stderr which paths do not exist; None (said too) when no PDF was
    found at all."""
    files, missing = find_pdfs(paths)
    for path in missing:
        print(f"no such file or folder: {path}", file=sys.stderr)
    if not files:
        print("no PDF files found", file=sys.stderr)
        return None
    return files, missing


@dataclass
class IngestPlan:
    """The PDFs of one `ingest`, registered and made partitions, and the runs that take them:
    unreadable documents through `source_job` alone (their failure must not hold up their
    neighbours), readable ones through `intake_job`, each run a range of adjacent documents."""

    documents: dict[str, str] = field(default_factory=dict)  # file path -> document key
    # file path -> the document its bytes already are (under another name)
    duplicates: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # document key -> why
    runs: list[DocumentsRun] = field(default_factory=list)

    @property
    def readable_keys(self) -> list[str]:
        return [k for k in dict.fromkeys(self.documents.values()) if k not in self.unreadable]


def plan_ingest(
    instance: dg.DagsterInstance,
    settings: Settings,
    files: Sequence[Path],
    run_tags: Mapping[str, str],
    batch_size: int | None = None,
) -> IngestPlan:
    """Register `files` as the inbox sensor would, add the new `documents` partitions and plan
    the runs, tagged `run_tags`: ranges of adjacent documents, about 20 runs (at most
    EXTRACTION_DOCUMENTS_PER_RUN documents each) unless `batch_size` says how many documents a
    run takes.
    """
    plan = _register(DocumentRegistry(open_store(settings.data_dir)), settings, files)
    readable = plan.readable_keys
    existing = set(instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))
    # Readable documents first, so that they are adjacent partitions: fewer, longer ranges.
    new_keys = [k for k in [*readable, *plan.unreadable] if k not in existing]
    if new_keys:
        instance.add_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME, new_keys)
    ordered = instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
    size = batch_size or max(1, min(settings.documents_per_run, -(-len(readable) // 20)))
    plan.runs.extend(
        DocumentsRun("source_job", batch, dict(run_tags))
        for batch in contiguous_batches(ordered, plan.unreadable, size)
    )
    plan.runs.extend(
        DocumentsRun("intake_job", batch, dict(run_tags))
        for batch in contiguous_batches(ordered, readable, size)
    )
    return plan


def _register(registry: DocumentRegistry, settings: Settings, files: Sequence[Path]) -> IngestPlan:
    """Register each file (its bytes stored) and check it can be read; no runs yet."""
    plan = IngestPlan()
    for path in files:
        data = path.read_bytes()
        registration = registry.register(path.name, data)
        key = registration.record.document_key
        plan.documents[str(path)] = key
        if registration.outcome is RegistrationOutcome.DUPLICATE_CONTENT:
            plan.duplicates[str(path)] = key
        try:
            check_pdf(data, settings.pdf_limits)
        except UnreadablePdf as error:
            plan.unreadable[key] = f"{path.name}: {type(error).__name__}: {error}"
    return plan


def ingest(
    instance: dg.DagsterInstance,
    environment: Environment,
    files: Sequence[Path],
    progress: TextIO = sys.stderr,
    batch_size: int | None = None,
    verbose: bool = False,
) -> IngestSummary:
    """Register `files` and extract them now, in runs in this process. Dagster's own event
    lines stay off the console unless `verbose` (they are in the event log either way: see
    `history`)."""
    started = time.monotonic()
    run_config = None if verbose else QUIET_RUN_CONFIG
    settings = environment.settings
    store = open_store(settings.data_dir)
    registry = DocumentRegistry(store)
    summary = IngestSummary(files=len(files))
    tags = {TRIGGER_TAG: "ingest", WORKER_HOST_TAG: socket.gethostname()}
    plan = plan_ingest(instance, settings, files, tags, batch_size)
    summary.failed.update(plan.unreadable)

    defs = build_definitions(settings)
    done = 0
    bar = _Progress(len(plan.readable_keys) + len(plan.unreadable), progress)
    for run in plan.runs:
        result = defs.resolve_job_def(run.job_name).execute_in_process(
            instance=instance,
            partition_key=run.partition_key,
            tags=run.run_tags,
            raise_on_error=False,
            run_config=run_config,
        )
        summary.run_ids.append(result.run_id)
        _settle(instance, result, store, registry, settings)
        done += len(run.keys)
        unreadable = run.job_name == "source_job"
        bar.update(done, f"{len(summary.failed)} unreadable" if unreadable else "")

    records = RecordStore(store)
    for key in plan.readable_keys:
        _count(summary, key, records.load(key), set(summary.run_ids))
    tables = defs.resolve_implicit_global_asset_job_def()
    tables.execute_in_process(
        instance=instance,
        asset_selection=list(TABLE_KEYS),
        raise_on_error=False,
        run_config=run_config,
    )
    bar.close()
    summary.wall_seconds = round(time.monotonic() - started, 2)
    return summary


def _settle(
    instance: dg.DagsterInstance,
    result: dg.ExecuteInProcessResult,
    store: ObjectStore,
    registry: DocumentRegistry,
    settings: Settings,
) -> None:
    """Dead letters of a finished run, as the dead_letters and run_notifications sensors would
    record them for a run the daemon launched."""
    run_error = None
    if not result.success:
        run_error = result.get_run_failure_event().message or "the run failed"
    event = settle_run(
        instance,
        result.dagster_run,
        run_error,
        store,
        registry,
        settings.operations,
        log,
    )
    if event is not None:
        instance.report_runless_asset_event(event)


def _count(
    summary: IngestSummary, key: str, outcome: ExtractionRecord | None, run_ids: set[str]
) -> None:
    if outcome is None or outcome.run_id not in run_ids:
        summary.failed[key] = "no outcome recorded (see `extraction-pipeline history`)"
        return
    if outcome.status == "failed":
        summary.failed[key] = f"{outcome.file_name}: {outcome.error_message}"
    elif outcome.status == "needs_review":
        summary.needs_review += 1
    else:
        summary.extracted += 1
    if outcome.call is not None and not outcome.cache_hit:
        summary.input_tokens += outcome.call.input_tokens
        summary.output_tokens += outcome.call.output_tokens
        summary.cost_usd = round(summary.cost_usd + (outcome.call.cost_usd or 0.0), 6)
    summary.reused += int(outcome.cache_hit)


class _Progress:
    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.tty = stream.isatty() and os.environ.get("TERM") != "dumb"
        self.update(0, "")

    def update(self, done: int, note: str) -> None:
        width = 30
        filled = width * done // max(self.total, 1)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} documents {note}"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def format_summary(summary: IngestSummary) -> str:
    lines = [
        f"{summary.files} files: {summary.extracted} extracted, {summary.needs_review} need "
        f"review, {len(summary.failed)} failed ({summary.reused} reused from earlier runs)",
        f"tokens: {summary.input_tokens} in, {summary.output_tokens} out; "
        f"cost ${summary.cost_usd:.4f}; wall time {summary.wall_seconds:.1f}s",
    ]
    lines += [f"  failed {key}: {reason}" for key, reason in summary.failed.items()]
    return "\n".join(lines)
