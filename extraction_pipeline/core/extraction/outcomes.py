"""What one extraction job needs, and the outcome of each document: read, served from the
store, extracted, or failed. Online extraction (`stream`) and batch extraction (`batch`) build
their outcomes here, so both record a document the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from extraction_pipeline.core.documents.pdf import (
    PdfDocumentInfo,
    PdfLimits,
    UnreadablePdf,
    read_pdf,
)
from extraction_pipeline.core.documents.registry import DocumentRecord, DocumentRegistry
from extraction_pipeline.core.extraction.records import (
    CachedExtraction,
    CallSummary,
    ExtractionRecord,
    FindingRecord,
    RecordStore,
)
from extraction_pipeline.core.extraction.validation import ValidationPolicy, validate_record
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.model.errors import ExtractionError
from extraction_pipeline.core.model.ratelimit import SharedLimits

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
    stop_grace_seconds: float = 15.0  # see ExtractionStream.interrupt
    # The deployment's concurrency slots and rate window (see RateLimiter); None: this process's.
    shared_limits: SharedLimits | None = None


@dataclass(frozen=True)
class SourceRead:
    """A readable document: its registration and what its original holds."""

    document: DocumentRecord
    info: PdfDocumentInfo


def read_source(
    registry: DocumentRegistry, key: str, limits: PdfLimits, run_id: str | None = None
) -> SourceRead | ExtractionRecord:
    """Read a registered document's original; or, when it cannot be read (or has no
    registration), the document's failed outcome, whose `error_kind` is the specific reason
    (`EmptyFile`, `NotAPdf`, `CorruptPdf`, `EncryptedPdf`, `TooLarge`, `DocumentNotRegistered`).
    That failure is permanent: the document never reaches the model."""
    document = registry.get(key)
    if document is None:
        message = f"DocumentNotRegistered: no registration for {key} in the data dir"
        return _source_failure(key, None, message, run_id)
    try:
        info = read_pdf(registry.original(document), limits)
    except UnreadablePdf as error:
        message = f"{type(error).__name__}: {document.file_name}: {error}"
        return _source_failure(key, document, message, run_id)
    return SourceRead(document, info)


def _source_failure(
    key: str, document: DocumentRecord | None, message: str, run_id: str | None
) -> ExtractionRecord:
    """An unreadable document's outcome: its kind is the message's prefix (e.g. CorruptPdf)."""
    return failure_outcome(key, document, None, message.split(":", 1)[0], message, run_id)


def success_outcome(
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


def error_outcome(
    document: DocumentRecord, pages: int | None, error: ExtractionError, job: ExtractionJob
) -> ExtractionRecord:
    outcome = failure_outcome(
        document.document_key, document, pages, error.kind, str(error), job.run_id
    )
    call = CallSummary.from_call(error.call) if error.call is not None else None
    return outcome.model_copy(update={"call": call, "retryable": error.retryable})


def failure_outcome(
    key: str,
    document: DocumentRecord | None,
    pages: int | None,
    kind: str,
    message: str,
    run_id: str | None,
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
        run_id=run_id,
    )
