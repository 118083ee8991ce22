"""Extraction outcomes as stored: the latest outcome per document, and a cache of paid results.

`records/<document_key>.json` holds what happened to a document last (extracted, needs review,
failed) with the record, the call's tokens and cost, and the findings. `cache/extractions/` keys
successful results on (content hash, schema, model, prompt version, API and input mode), so the
same document is never paid for twice, whichever run or partition asks again.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from extraction_pipeline.core.extraction.validation import Finding
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.model.types import CallRecord
from extraction_pipeline.core.store import ObjectStore

ExtractionStatus = Literal["extracted", "needs_review", "failed"]


class CallSummary(BaseModel):
    """The call metadata of an extraction, flattened for storage and tables."""

    model_config = ConfigDict(frozen=True)

    model: str
    api_mode: str
    input_mode: str
    attempts: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float | None
    latency_seconds: float
    request_id: str | None
    prompt_version: str
    schema_name: str
    schema_fingerprint: str
    repaired: bool

    @classmethod
    def from_call(cls, call: CallRecord) -> CallSummary:
        return cls(
            model=call.model,
            api_mode=call.api_mode,
            input_mode=call.input_mode,
            attempts=call.attempts,
            input_tokens=call.usage.input_tokens,
            cached_input_tokens=call.usage.cached_input_tokens,
            output_tokens=call.usage.output_tokens,
            cost_usd=call.cost_usd,
            latency_seconds=round(call.latency_seconds, 3),
            request_id=call.request_id,
            prompt_version=call.prompt_version,
            schema_name=call.schema_name,
            schema_fingerprint=call.schema_fingerprint,
            repaired=call.repaired,
        )


class FindingRecord(BaseModel):
    check: str
    message: str

    @classmethod
    def from_finding(cls, finding: Finding) -> FindingRecord:
        return cls(check=finding.check.value, message=finding.message)


class ExtractionRecord(BaseModel):
    """The latest extraction outcome of one document."""

    document_key: str
    file_name: str
    sha256: str
    pages: int | None
    status: ExtractionStatus
    record: dict[str, Any] | None = None
    call: CallSummary | None = None
    cache_hit: bool = False
    error_kind: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    findings: list[FindingRecord] = []
    review_reason: str | None = None
    extracted_at: datetime
    run_id: str | None = None
    batch_id: str | None = None  # answered through the Batch API (billed at the batch price)


class CachedExtraction(BaseModel):
    record: dict[str, Any]
    call: CallSummary
    pages: int | None = None


def cache_key(sha256: str, schema_fingerprint: str, config: AgentConfig) -> str:
    """Everything that changes what the model would answer for these bytes."""
    parts = [
        sha256,
        schema_fingerprint,
        config.model,
        config.prompt_version,
        config.api_mode,
        config.input_mode,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class RecordStore:
    """Latest outcomes and the paid-results cache, on top of an `ObjectStore`."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def save(self, outcome: ExtractionRecord) -> None:
        self.store.put(_record_name(outcome.document_key), outcome.model_dump_json().encode())

    def load(self, document_key: str) -> ExtractionRecord | None:
        try:
            return ExtractionRecord.model_validate_json(self.store.get(_record_name(document_key)))
        except FileNotFoundError:
            return None

    def cached(self, key: str) -> CachedExtraction | None:
        try:
            return CachedExtraction.model_validate_json(self.store.get(_cache_name(key)))
        except FileNotFoundError:
            return None

    def remember(self, key: str, result: CachedExtraction) -> None:
        self.store.put(_cache_name(key), result.model_dump_json().encode())


def _record_name(document_key: str) -> str:
    return f"records/{document_key}.json"


def _cache_name(key: str) -> str:
    return f"cache/extractions/{key[:2]}/{key}.json"
