"""What the agent returns per document: a validated record with its call, or a typed error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

from extraction_pipeline.core.model.errors import ExtractionError
from extraction_pipeline.core.model.types import ApiMode, CallRecord, RecordT, SentInputMode

# Where each API's requests go, as a Batch API line names it.
ENDPOINTS: dict[ApiMode, str] = {"responses": "/v1/responses", "chat": "/v1/chat/completions"}


@dataclass(frozen=True)
class ExtractionResult(Generic[RecordT]):
    """A validated record and the metadata of the call that produced it."""

    record: RecordT
    call: CallRecord


@dataclass(frozen=True)
class DocumentOutcome(Generic[RecordT]):
    """Per-document outcome of `extract_many`: exactly one of `result` and `error` is set."""

    document_key: str
    result: ExtractionResult[RecordT] | None = None
    error: ExtractionError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def call(self) -> CallRecord | None:
        if self.result is not None:
            return self.result.call
        return self.error.call if self.error is not None else None


@dataclass(frozen=True)
class BatchRequest:
    """One document's request as a line of a Batch API input file."""

    custom_id: str
    url: str
    body: dict[str, Any]
    input_mode: SentInputMode

    def line(self) -> dict[str, Any]:
        return {"custom_id": self.custom_id, "method": "POST", "url": self.url, "body": self.body}
