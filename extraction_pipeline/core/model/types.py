"""Records the extraction agent takes and returns: the document, the call metadata, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeVar

from pydantic import BaseModel

from extraction_pipeline.core.model.costs import TokenUsage

ApiMode = Literal["responses", "chat"]
InputMode = Literal["auto", "text", "pdf", "images"]
# What was actually sent: "auto" resolves to one of these per document.
SentInputMode = Literal["text", "pdf", "images"]

RecordT = TypeVar("RecordT", bound=BaseModel)


@dataclass(frozen=True)
class DocumentInput:
    """One document to extract: its identity, its bytes and the text layer read from it."""

    document_key: str
    file_name: str
    pdf_bytes: bytes = field(repr=False)
    page_texts: tuple[str, ...] = ()
    has_text_layer: bool = False


@dataclass(frozen=True)
class CallRecord:
    """What one extraction cost and how it went, for success and failure alike.

    `usage` and `cost_usd` add up every attempt that returned tokens (a refusal, the first answer
    of a repair round), because those tokens are billed. `latency_seconds` is time spent waiting
    for the model; `elapsed_seconds` also includes rate-limit queueing and retry backoff.
    """

    document_key: str
    model: str
    api_mode: ApiMode
    input_mode: SentInputMode
    attempts: int
    usage: TokenUsage
    cost_usd: float | None
    latency_seconds: float
    elapsed_seconds: float
    request_id: str | None
    prompt_version: str
    schema_name: str
    schema_fingerprint: str
    repaired: bool = False
