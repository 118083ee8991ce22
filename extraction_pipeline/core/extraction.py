"""Extracting a batch of registered documents: cache first, then the agent, outcome per document.

Results are stored as each document finishes, so a run that dies half-way keeps everything it
paid for; the next attempt finds those results in the cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from extraction_pipeline.core.agent import extract_many
from extraction_pipeline.core.agent_config import AgentConfig
from extraction_pipeline.core.agent_errors import ExtractionError
from extraction_pipeline.core.agent_types import DocumentInput, DocumentOutcome
from extraction_pipeline.core.pdf import PdfDocumentInfo, PdfLimits, UnreadablePdf, read_pdf
from extraction_pipeline.core.records import (
    CachedExtraction,
    CallSummary,
    ExtractionRecord,
    FindingRecord,
    RecordStore,
    cache_key,
)
from extraction_pipeline.core.registry import DocumentRecord, DocumentRegistry
from extraction_pipeline.core.schemas import schema_fingerprint
from extraction_pipeline.core.validation import ValidationPolicy, validate_record

log = logging.getLogger(__name__)

# Failures a person has to look at: the model will answer the same way to the same input.
REVIEW_ERROR_KINDS = frozenset({"refused", "truncated", "schema_violation", "unreadable_input"})


@dataclass(frozen=True)
class ExtractionJob:
    """What a batch needs besides the keys: where documents are, the schema, the model."""

    registry: DocumentRegistry
    records: RecordStore
    schema: type[BaseModel]
    config: AgentConfig
    policy: ValidationPolicy
    pdf_limits: PdfLimits
    run_id: str | None = None


def extract_documents(
    job: ExtractionJob,
    keys: Sequence[str],
    read: Mapping[str, PdfDocumentInfo] | None = None,
    on_outcome: Callable[[ExtractionRecord], None] | None = None,
) -> list[ExtractionRecord]:
    """Extract `keys` (sync entry point; runs its own event loop). One outcome per key, in order.

    `read` holds documents already opened by the caller, so they are not parsed twice.
    """
    return asyncio.run(extract_documents_async(job, keys, read, on_outcome))


async def extract_documents_async(
    job: ExtractionJob,
    keys: Sequence[str],
    read: Mapping[str, PdfDocumentInfo] | None = None,
    on_outcome: Callable[[ExtractionRecord], None] | None = None,
) -> list[ExtractionRecord]:
    keys = list(dict.fromkeys(keys))  # a key asked twice is extracted (and paid) once
    fingerprint = schema_fingerprint(job.schema)
    outcomes: dict[str, ExtractionRecord] = {}

    def finish(outcome: ExtractionRecord) -> None:
        job.records.save(outcome)
        outcomes[outcome.document_key] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    inputs: list[DocumentInput] = []
    documents: dict[str, DocumentRecord] = {}
    pages: dict[str, int] = {}
    for key in keys:
        document = job.registry.get(key)
        if document is None:
            finish(_failure(key, None, None, "not_registered", f"no registration for {key}", job))
            continue
        documents[key] = document
        cached = job.records.cached(cache_key(document.sha256, fingerprint, job.config))
        if cached is not None:
            finish(_success(document, cached.pages, cached, job, cache_hit=True))
            continue
        try:
            info = (read or {}).get(key) or read_pdf(
                job.registry.original(document), job.pdf_limits
            )
        except UnreadablePdf as error:
            kind = f"unreadable_input: {type(error).__name__}"
            finish(_failure(key, document, None, "unreadable_input", f"{kind}: {error}", job))
            continue
        pages[key] = info.page_count
        inputs.append(
            DocumentInput(
                document_key=key,
                file_name=document.file_name,
                pdf_bytes=job.registry.original(document),
                page_texts=info.page_texts,
                has_text_layer=info.has_text_layer,
            )
        )

    def on_agent_outcome(outcome: DocumentOutcome[BaseModel]) -> None:
        document = documents[outcome.document_key]
        page_count = pages.get(document.document_key)
        if outcome.result is not None:
            call = CallSummary.from_call(outcome.result.call)
            record = outcome.result.record.model_dump(mode="json")
            cached = CachedExtraction(record=record, call=call, pages=page_count)
            job.records.remember(cache_key(document.sha256, fingerprint, job.config), cached)
            finish(_success(document, page_count, cached, job, cache_hit=False))
        else:
            error = outcome.error or ExtractionError("no result and no error")
            finish(_error_outcome(document, page_count, error, job))

    if inputs:
        await extract_many(inputs, job.schema, job.config, on_outcome=on_agent_outcome)
    for key in keys:
        if key not in outcomes:  # storing or validating its outcome failed: never drop it
            log.error("document %s: no outcome recorded", key)
            message = "internal: the outcome could not be recorded (see the run log)"
            finish(_failure(key, documents.get(key), pages.get(key), "internal", message, job))
    return [outcomes[key] for key in keys]


def _success(
    document: DocumentRecord,
    pages: int | None,
    cached: CachedExtraction,
    job: ExtractionJob,
    cache_hit: bool,
) -> ExtractionRecord:
    findings = validate_record(cached.record, job.policy)
    review = "; ".join(finding.message for finding in findings) or None
    return ExtractionRecord(
        document_key=document.document_key,
        file_name=document.file_name,
        sha256=document.sha256,
        pages=pages,
        status="needs_review" if findings else "extracted",
        record=cached.record,
        call=cached.call,
        cache_hit=cache_hit,
        findings=[FindingRecord.from_finding(finding) for finding in findings],
        review_reason=review,
        extracted_at=datetime.now(UTC),
        run_id=job.run_id,
    )


def _error_outcome(
    document: DocumentRecord, pages: int | None, error: ExtractionError, job: ExtractionJob
) -> ExtractionRecord:
    outcome = _failure(document.document_key, document, pages, error.kind, str(error), job)
    call = CallSummary.from_call(error.call) if error.call is not None else None
    return outcome.model_copy(update={"call": call, "retryable": error.retryable})


def _failure(
    key: str,
    document: DocumentRecord | None,
    pages: int | None,
    kind: str,
    message: str,
    job: ExtractionJob,
) -> ExtractionRecord:
    return ExtractionRecord(
        document_key=key,
        file_name=document.file_name if document else "",
        sha256=document.sha256 if document else "",
        pages=pages,
        status="failed",
        error_kind=kind,
        error_message=message,
        retryable=False,
        review_reason=message if kind in REVIEW_ERROR_KINDS else None,
        extracted_at=datetime.now(UTC),
        run_id=job.run_id,
    )
