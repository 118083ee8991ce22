"""What the agent returns per document: a validated record with its call, or a typed error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from extraction_pipeline.core.model.errors import ExtractionError
from extraction_pipeline.core.model.types import CallRecord, RecordT


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
