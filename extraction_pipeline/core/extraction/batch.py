"""Extracting through the provider's Batch API: the requests online extraction would send,
answered within 24 hours at half the token price.

`prepare` turns documents into request lines and settles at once those that need no request (a
stored result, an unreadable original); `split` keeps each input file within the API's limits;
`collect` reads a finished batch's output and error files back into one outcome per answered
document, stored like an online outcome (the same result cache: a document is never paid for
twice across modes), and names the documents left without a usable answer, to submit again.
`BatchApi` is the small interface to the provider's files and batches endpoints.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import openai
from pydantic import BaseModel, ValidationError

from extraction_pipeline.core.documents.pdf import PdfDocumentInfo, UnreadablePdf, read_pdf
from extraction_pipeline.core.extraction.outcomes import (
    ExtractionJob,
    error_outcome,
    failure_outcome,
    success_outcome,
)
from extraction_pipeline.core.extraction.records import (
    CachedExtraction,
    CallSummary,
    ExtractionRecord,
    cache_key,
)
from extraction_pipeline.core.model.agent import ExtractionAgent
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.model.errors import (
    ExtractionError,
    ServerError,
    UnreadableInput,
    classify_status,
)
from extraction_pipeline.core.model.prompt import resolve_input_mode, schema_fingerprint
from extraction_pipeline.core.model.results import BatchRequest
from extraction_pipeline.core.model.types import DocumentInput
from extraction_pipeline.core.model.wire import reply_from_body

log = logging.getLogger(__name__)

# The API's limits per input file are 50,000 requests and 200 MB; keep a margin on the bytes.
MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 190 * 1024 * 1024
COMPLETION_WINDOW: Literal["24h"] = "24h"
OPEN_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
# Error codes of lines the batch never answered: their documents are simply submitted again.
NO_ANSWER_CODES = frozenset({"batch_expired", "batch_cancelled"})


@dataclass(frozen=True)
class Prepared:
    """Request lines to submit, and the outcomes of documents that need none."""

    requests: list[BatchRequest] = field(default_factory=list)
    settled: list[ExtractionRecord] = field(default_factory=list)


def prepare(
    job: ExtractionJob, keys: Sequence[str], read: Mapping[str, PdfDocumentInfo] | None = None
) -> Prepared:
    """One request per document to extract, exactly as the agent would send it online."""
    agent: ExtractionAgent[BaseModel] = ExtractionAgent(job.schema, job.config)
    fingerprint = schema_fingerprint(job.schema)
    prepared = Prepared()
    for key in dict.fromkeys(keys):
        document = job.registry.get(key)
        if document is None:
            message = f"no registration for {key}"
            prepared.settled.append(
                failure_outcome(key, None, None, "not_registered", message, job.run_id)
            )
            continue
        cached = job.records.cached(cache_key(document.sha256, fingerprint, job.config))
        if cached is not None:
            prepared.settled.append(success_outcome(document, cached.pages, cached, job, True))
            continue
        data = job.registry.original(document)
        try:
            info = (read or {}).get(key) or read_pdf(data, job.pdf_limits)
            request = agent.batch_request(_document_input(key, document.file_name, data, info))
        except (UnreadablePdf, UnreadableInput) as error:
            message = f"unreadable_input: {type(error).__name__}: {error}"
            outcome = failure_outcome(key, document, None, "unreadable_input", message, job.run_id)
            prepared.settled.append(outcome)
            continue
        prepared.requests.append(request)
    return prepared


def split(
    requests: Sequence[BatchRequest],
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_FILE_BYTES,
) -> list[list[BatchRequest]]:
    """Requests in groups that each fit one input file."""
    groups: list[list[BatchRequest]] = []
    current: list[BatchRequest] = []
    size = 0
    for request in requests:
        line = len(encode([request]))
        if current and (len(current) >= max_requests or size + line > max_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(request)
        size += line
    if current:
        groups.append(current)
    return groups


def encode(requests: Iterable[BatchRequest]) -> bytes:
    """The JSONL input file."""
    return b"".join(json.dumps(r.line(), separators=(",", ":")).encode() + b"\n" for r in requests)


@dataclass(frozen=True)
class Collected:
    """What a finished batch settled, and which of its documents need submitting again
    (no answer: expired or cancelled before their turn, or an answer worth retrying)."""

    outcomes: list[ExtractionRecord]
    unanswered: list[str]


def collect(job: ExtractionJob, batch_id: str, keys: Sequence[str], results: bytes) -> Collected:
    """Read the output and error lines of `batch_id` for `keys` (joined by `custom_id`: lines
    come in any order); store each answered document's outcome, as online extraction does."""
    agent: ExtractionAgent[BaseModel] = ExtractionAgent(job.schema, job.config)
    fingerprint = schema_fingerprint(job.schema)
    lines = _lines_by_document(results)
    outcomes: list[ExtractionRecord] = []
    unanswered: list[str] = []
    for key in dict.fromkeys(keys):
        line = lines.get(key)
        response = (line or {}).get("response")
        if not response:
            unanswered.append(key)
            error = (line or {}).get("error") or {}
            if line is not None and error.get("code") not in NO_ANSWER_CODES:
                log.warning("document %s: batch line error %s", key, error)
            continue
        outcome = _outcome(job, agent, fingerprint, key, response)
        outcome = outcome.model_copy(update={"batch_id": batch_id})
        job.records.save(outcome)
        outcomes.append(outcome)
        if outcome.status == "failed" and outcome.retryable:
            unanswered.append(key)
    return Collected(outcomes, unanswered)


def _outcome(
    job: ExtractionJob,
    agent: ExtractionAgent[BaseModel],
    fingerprint: str,
    key: str,
    response: Mapping[str, object],
) -> ExtractionRecord:
    document = job.registry.get(key)
    if document is None:
        message = f"no registration for {key}"
        return failure_outcome(key, None, None, "not_registered", message, job.run_id)
    data = job.registry.original(document)
    try:
        info = read_pdf(data, job.pdf_limits)
    except UnreadablePdf as error:
        message = f"unreadable_input: {type(error).__name__}: {error}"
        return failure_outcome(key, document, None, "unreadable_input", message, job.run_id)
    mode = resolve_input_mode(job.config.input_mode, _document_input(key, "", data, info))
    status = int(str(response.get("status_code") or 0))
    body = response.get("body")
    request_id = response.get("request_id")
    try:
        if status != 200 or not isinstance(body, dict):
            raise _line_error(status, body, request_id)
        try:
            reply = reply_from_body(job.config.api_mode, body, str(request_id or "") or None)
        except ValidationError as error:  # not the answer shape the API promises: ask again
            raise ServerError(f"malformed answer in the batch output: {error}") from error
        result = agent.batch_result(key, mode, reply)
    except ExtractionError as error:
        return error_outcome(document, info.page_count, error, job)
    call = CallSummary.from_call(result.call)
    cached = CachedExtraction(
        record=result.record.model_dump(mode="json"), call=call, pages=info.page_count
    )
    job.records.remember(cache_key(document.sha256, fingerprint, job.config), cached)
    return success_outcome(document, info.page_count, cached, job, False)


def _line_error(status: int, body: object, request_id: object) -> ExtractionError:
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message")) if isinstance(error, dict) else "no answer body"
    code = str(error.get("code")) if isinstance(error, dict) and error.get("code") else None
    return classify_status(
        status, message, code=code, request_id=str(request_id) if request_id else None
    )


def _lines_by_document(results: bytes) -> dict[str, dict]:
    lines: dict[str, dict] = {}
    for text in results.decode("utf-8", "replace").splitlines():
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError:
            log.warning("a batch result line is not JSON: %.200s", text)
            continue
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        # An answer wins over an error line for the same document.
        if isinstance(custom_id, str) and (custom_id not in lines or item.get("response")):
            lines[custom_id] = item
    return lines


def _document_input(key: str, file_name: str, data: bytes, info: PdfDocumentInfo) -> DocumentInput:
    return DocumentInput(
        document_key=key,
        file_name=file_name,
        pdf_bytes=data,
        page_texts=info.page_texts,
        has_text_layer=info.has_text_layer,
    )


@dataclass(frozen=True)
class BatchState:
    """What the provider says about a batch."""

    batch_id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[str, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class BatchApi:
    """The provider's Files and Batches endpoints, through the `openai` SDK (synchronous: used
    by a step, a sensor tick or the CLI, one call at a time)."""

    def __init__(self, config: AgentConfig) -> None:
        self._client = openai.OpenAI(
            api_key=config.api_key, base_url=config.base_url, timeout=config.timeout_seconds
        )

    def __enter__(self) -> BatchApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def submit(self, requests: Sequence[BatchRequest], metadata: Mapping[str, str]) -> str:
        """Upload `requests` as one input file and start a batch on it; its id."""
        uploaded = self._client.files.create(
            file=("batch.jsonl", encode(requests)), purpose="batch"
        )
        batch = self._client.batches.create(
            input_file_id=uploaded.id,
            endpoint=requests[0].url,  # type: ignore[arg-type]
            completion_window=COMPLETION_WINDOW,
            metadata=dict(metadata),
        )
        return batch.id

    def state(self, batch_id: str) -> BatchState:
        return _state(self._client.batches.retrieve(batch_id))

    def cancel(self, batch_id: str) -> BatchState:
        return _state(self._client.batches.cancel(batch_id))

    def results(self, state: BatchState) -> bytes:
        """The output file, then the error file, of an ended batch (either may be absent)."""
        parts = []
        for file_id in (state.output_file_id, state.error_file_id):
            if file_id:
                parts.append(self._client.files.content(file_id).content)
        return b"\n".join(parts)


def _state(batch: openai.types.Batch) -> BatchState:
    counts = batch.request_counts
    errors = (
        tuple(f"line {e.line}: {e.code}: {e.message}" for e in (batch.errors.data or []))
        if batch.errors is not None
        else ()
    )
    return BatchState(
        batch_id=batch.id,
        status=batch.status,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        errors=errors,
    )
