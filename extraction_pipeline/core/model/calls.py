"""Bookkeeping of one extraction across its attempts: what becomes its `CallRecord`."""

from __future__ import annotations

import time

from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.model.costs import TokenUsage, cost_usd
from extraction_pipeline.core.model.errors import ExtractionError
from extraction_pipeline.core.model.types import CallRecord, SentInputMode
from extraction_pipeline.core.model.wire import ModelReply


class CallTracker:
    """Accumulates attempts, tokens and timings across retries and the repair round.

    Mutable on purpose: it lives for one `extract` call and is frozen into a `CallRecord`.
    """

    def __init__(
        self,
        document_key: str,
        config: AgentConfig,
        schema_name: str,
        schema_fingerprint: str,
        batch: bool = False,
    ) -> None:
        self.document_key = document_key
        self.config = config
        self.schema_name = schema_name
        self.schema_fingerprint = schema_fingerprint
        self.started = time.monotonic()
        self.input_mode: SentInputMode = "text"
        self.attempts = 0
        self.usage = TokenUsage()
        self.latency = 0.0
        self.request_id: str | None = None
        self.model = config.model
        self.repaired = False
        self.batch = batch  # answered through the Batch API: billed at the batch price

    def add_reply(self, reply: ModelReply) -> None:
        """Count a reply's tokens: every answer is billed, usable or not."""
        self.usage = self.usage + reply.usage
        self.model = reply.model or self.model
        self.request_id = reply.request_id or self.request_id

    def record(self) -> CallRecord:
        return CallRecord(
            document_key=self.document_key,
            model=self.model,
            api_mode=self.config.api_mode,
            input_mode=self.input_mode,
            attempts=self.attempts,
            usage=self.usage,
            cost_usd=cost_usd(self.usage, self.model, self.config.prices, batch=self.batch),
            latency_seconds=self.latency,
            elapsed_seconds=time.monotonic() - self.started,
            request_id=self.request_id,
            prompt_version=self.config.prompt_version,
            schema_name=self.schema_name,
            schema_fingerprint=self.schema_fingerprint,
            repaired=self.repaired,
        )

    def fail(self, error: ExtractionError) -> ExtractionError:
        """Attach this call's record to `error`, ready to raise."""
        error.call = self.record()
        error.request_id = error.request_id or self.request_id
        return error
