"""The structured-extraction agent: one PDF in, one validated record (or a typed error) out.

Per document: choose the input shape (text layer, PDF file or page images), call the model with a
strict JSON-schema output format computed once per schema, interpret the answer (refusal,
truncation), validate it, and on a schema violation ask once more with the validation error.
Transient failures are retried here with exponential backoff and jitter, honouring the server's
Retry-After; the SDK's own retries are off so every attempt is counted in the `CallRecord`.

`extract_many` runs many documents concurrently under one `RateLimiter` and returns one outcome
per document: a failure never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Generic, Self, cast

import httpx2
import openai
from openai import AsyncOpenAI, DefaultAsyncHttpx2Client
from pydantic import ValidationError

from extraction_pipeline.core.documents.pdf import UnreadablePdf, render_pages_png
from extraction_pipeline.core.model import prompt
from extraction_pipeline.core.model.calls import CallTracker
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.model.errors import (
    AuthFailed,
    ExtractionError,
    InternalError,
    ModelRefused,
    OutputTruncated,
    SchemaViolation,
    ServerError,
    UnreadableInput,
    classify_api_error,
)
from extraction_pipeline.core.model.prompt import schema_fingerprint
from extraction_pipeline.core.model.ratelimit import RateLimiter
from extraction_pipeline.core.model.results import (
    ENDPOINTS,
    BatchRequest,
    DocumentOutcome,
    ExtractionResult,
)
from extraction_pipeline.core.model.types import DocumentInput, RecordT, SentInputMode
from extraction_pipeline.core.model.wire import ModelReply, reply_from_chat, reply_from_response

logger = logging.getLogger(__name__)

# Jitter removes up to this fraction of each backoff delay, so retries of many callers spread out.
JITTER_FRACTION = 0.25
# Spare connections above the concurrency cap, so the pool never becomes the bottleneck.
POOL_HEADROOM = 4


class ExtractionAgent(Generic[RecordT]):
    """Extracts `schema` records from documents. Use as `async with ExtractionAgent(...) as a`.

    Without `client`, the agent creates one `AsyncOpenAI` on entry (pool sized for the
    concurrency cap) and closes it on exit. Pass `limiter` to share one RPM/TPM budget between
    agents; by default the agent builds its own from the config.
    """

    def __init__(
        self,
        schema: type[RecordT],
        config: AgentConfig | None = None,
        *,
        client: AsyncOpenAI | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.schema = schema
        self.config = config or AgentConfig()
        self.output_format = prompt.output_format(schema)
        self.schema_fingerprint = schema_fingerprint(schema)
        self.limiter = limiter or RateLimiter(
            max_concurrency=self.config.max_concurrency, rpm=self.config.rpm, tpm=self.config.tpm
        )
        self._format = self.output_format.for_api(self.config.api_mode)
        self._client = client
        self._owns_client = client is None
        self._sleep = sleep
        self._rng = rng or random.Random()
        # Documents whose request is on the wire now: on a stop these are let finish (they are
        # being paid for); the others are not sent.
        self.calls_in_flight: set[str] = set()

    async def __aenter__(self) -> Self:
        if self._client is None:
            self._client = self._make_client()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._owns_client and self._client is not None:
            await self._client.close()
            self._client = None

    def _make_client(self) -> AsyncOpenAI:
        config = self.config
        connections = config.max_concurrency + POOL_HEADROOM
        timeout = httpx2.Timeout(config.timeout_seconds, connect=min(10.0, config.timeout_seconds))
        http_client = DefaultAsyncHttpx2Client(
            limits=httpx2.Limits(
                max_connections=connections, max_keepalive_connections=connections
            ),
            timeout=timeout,
        )
        try:
            return AsyncOpenAI(
                api_key=config.api_key,
                base_url=config.base_url,
                max_retries=0,
                timeout=timeout,
                http_client=http_client,
            )
        except openai.OpenAIError as error:
            raise AuthFailed(f"cannot create the OpenAI client: {error}") from error

    async def extract(self, document: DocumentInput) -> ExtractionResult[RecordT]:
        """Extract one record from `document`, or raise an `ExtractionError` carrying the call."""
        tracker = CallTracker(
            document.document_key,
            self.config,
            self.output_format.schema_name,
            self.schema_fingerprint,
        )
        mode = prompt.resolve_input_mode(self.config.input_mode, document)
        tracker.input_mode = mode
        try:
            images = await self._page_images(document) if mode == "images" else ()
        except UnreadablePdf as error:
            raise tracker.fail(UnreadableInput(f"cannot render pages: {error}")) from error
        parts = prompt.document_parts(document, mode, self.output_format.schema_name, images)
        estimate = prompt.estimate_tokens(
            parts, self.output_format.schema_json, document, self.config.max_output_tokens
        )
        turns: tuple[prompt.Turn, ...] = ()
        while True:
            reply = await self._call_with_retries(parts, turns, estimate, tracker)
            try:
                return self._result(reply, tracker, can_repair=not tracker.repaired)
            except _Repair as repair:
                logger.info(
                    "document %s: schema violation, repairing (%s)",
                    document.document_key,
                    repair.problem,
                )
                tracker.repaired = True
                turns = prompt.repair_turns(reply.text, repair.problem)

    def batch_request(self, document: DocumentInput) -> BatchRequest:
        """The request `extract` would send first for `document`, as a Batch API line: same
        model, instructions, input and output format."""
        mode = prompt.resolve_input_mode(self.config.input_mode, document)
        images: tuple[bytes, ...] = ()
        if mode == "images":
            try:
                images = tuple(render_pages_png(document.pdf_bytes, dpi=self.config.image_dpi))
            except UnreadablePdf as error:
                raise UnreadableInput(f"cannot render pages: {error}") from error
        parts = prompt.document_parts(document, mode, self.output_format.schema_name, images)
        return BatchRequest(
            custom_id=document.document_key,
            url=ENDPOINTS[self.config.api_mode],
            body=self._body(parts, ()),
            input_mode=mode,
        )

    def batch_result(
        self, document_key: str, input_mode: SentInputMode, reply: ModelReply
    ) -> ExtractionResult[RecordT]:
        """Judge a batch answer as `extract` judges an online one (no repair round: a schema
        violation is final), billed at the batch price; raises an `ExtractionError`."""
        tracker = CallTracker(
            document_key,
            self.config,
            self.output_format.schema_name,
            self.schema_fingerprint,
            batch=True,
        )
        tracker.input_mode = input_mode
        tracker.attempts = 1
        tracker.add_reply(reply)
        if reply.failed is not None:
            raise tracker.fail(
                ServerError(f"the provider reports the response failed: {reply.failed}")
            )
        return self._result(reply, tracker, can_repair=False)

    def _result(
        self, reply: ModelReply, tracker: CallTracker, *, can_repair: bool
    ) -> ExtractionResult[RecordT]:
        self._raise_if_unusable(reply, tracker)
        try:
            record = self.schema.model_validate_json(reply.text)
        except ValidationError as error:
            problem = _summarize(error)
            if can_repair:
                raise _Repair(problem) from error
            after = " after repair" if tracker.repaired else ""
            raise tracker.fail(
                SchemaViolation(f"answer does not match the schema{after}: {problem}")
            ) from error
        return ExtractionResult(record=record, call=tracker.record())

    async def extract_outcome(self, document: DocumentInput) -> DocumentOutcome[RecordT]:
        """`extract`, with every failure captured in the outcome instead of raised."""
        try:
            return DocumentOutcome(document.document_key, result=await self.extract(document))
        except ExtractionError as error:
            return DocumentOutcome(document.document_key, error=error)
        except Exception as error:
            logger.exception("document %s: unexpected failure", document.document_key)
            internal = InternalError(f"{type(error).__name__}: {error}")
            internal.__cause__ = error
            return DocumentOutcome(document.document_key, error=internal)

    async def _page_images(self, document: DocumentInput) -> tuple[bytes, ...]:
        def render() -> list[bytes]:
            return render_pages_png(document.pdf_bytes, dpi=self.config.image_dpi)

        return tuple(await asyncio.to_thread(render))

    def _raise_if_unusable(self, reply: ModelReply, tracker: CallTracker) -> None:
        if reply.refusal is not None:
            raise tracker.fail(ModelRefused(f"the model refused: {reply.refusal}"))
        if reply.content_filtered:
            raise tracker.fail(ModelRefused("the answer was stopped by the content filter"))
        if reply.truncated is not None:
            raise tracker.fail(
                OutputTruncated(
                    f"the answer was cut off ({reply.truncated}) at "
                    f"max_output_tokens={self.config.max_output_tokens}"
                )
            )

    async def _call_with_retries(
        self,
        parts: tuple[prompt.PromptPart, ...],
        turns: tuple[prompt.Turn, ...],
        estimate: int,
        tracker: CallTracker,
    ) -> ModelReply:
        retries = 0
        while True:
            outcome = await self._attempt(parts, turns, estimate, tracker)
            if isinstance(outcome, ModelReply):
                return outcome
            error = outcome
            delay = self._retry_delay(error, retries)
            if delay is None:
                raise tracker.fail(error)
            retries += 1
            logger.warning(
                "document %s: %s on attempt %d, retrying in %.2fs",
                tracker.document_key,
                error,
                tracker.attempts,
                delay,
            )
            await self._sleep(delay)

    async def _attempt(
        self,
        parts: tuple[prompt.PromptPart, ...],
        turns: tuple[prompt.Turn, ...],
        estimate: int,
        tracker: CallTracker,
    ) -> ModelReply | ExtractionError:
        """One HTTP call under the limiter: the reply, or the classified error to decide on."""
        async with self.limiter.acquire(estimate) as permit:
            tracker.attempts += 1
            started = time.monotonic()
            self.calls_in_flight.add(tracker.document_key)
            try:
                reply = await self._send(parts, turns)
            except openai.OpenAIError as sdk_error:
                error = classify_api_error(sdk_error)
                error.__cause__ = sdk_error
                tracker.request_id = error.request_id or tracker.request_id
                return error
            finally:
                self.calls_in_flight.discard(tracker.document_key)
                tracker.latency += time.monotonic() - started
            permit.record_tokens(reply.usage.total_tokens)
        tracker.add_reply(reply)
        if reply.failed is not None:
            return ServerError(f"the provider reports the response failed: {reply.failed}")
        return reply

    def _retry_delay(self, error: ExtractionError, retries: int) -> float | None:
        """Seconds to wait before retrying, or None when the error is final."""
        config = self.config
        if not error.retryable or retries >= config.max_retries:
            return None
        requested = error.retry_after_seconds
        if requested is not None and requested > 0:
            return requested if requested <= config.max_retry_wait_seconds else None
        backoff = min(config.backoff_base_seconds * 2**retries, config.backoff_max_seconds)
        return backoff * (1.0 - JITTER_FRACTION * self._rng.random())

    async def _send(
        self, parts: tuple[prompt.PromptPart, ...], turns: tuple[prompt.Turn, ...]
    ) -> ModelReply:
        client = self._client
        if client is None:
            raise RuntimeError("ExtractionAgent used outside 'async with'")
        body = cast(Any, self._body(parts, turns))
        if self.config.api_mode == "responses":
            return reply_from_response(await client.responses.create(**body))
        return reply_from_chat(await client.chat.completions.create(**body))

    def _body(
        self, parts: tuple[prompt.PromptPart, ...], turns: tuple[prompt.Turn, ...]
    ) -> dict[str, Any]:
        """The request body, one for both ways of sending it: the SDK call and a batch line."""
        config = self.config
        body: dict[str, Any]
        if config.api_mode == "responses":
            body = {
                "model": config.model,
                "instructions": prompt.INSTRUCTIONS,
                "input": prompt.responses_input(parts, turns),
                "text": {"format": self._format},
                "max_output_tokens": config.max_output_tokens,
                "store": config.store,
            }
        else:
            body = {
                "model": config.model,
                "messages": prompt.chat_messages(parts, turns),
                "response_format": self._format,
                "max_completion_tokens": config.max_output_tokens,
            }
        if config.temperature is not None:  # reasoning models refuse the parameter
            body["temperature"] = config.temperature
        return body


class _Repair(Exception):
    """The answer violates the schema and one repair round is allowed."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _summarize(error: ValidationError, limit: int = 10) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}"
        for item in error.errors(include_url=False)[:limit]
    ]
    return "; ".join(problems)


async def extract_many(
    documents: Iterable[DocumentInput],
    schema: type[RecordT],
    config: AgentConfig | None = None,
    *,
    limiter: RateLimiter | None = None,
    on_outcome: Callable[[DocumentOutcome[RecordT]], None] | None = None,
) -> list[DocumentOutcome[RecordT]]:
    """Extract every document concurrently; one outcome per document, in input order.

    Concurrency, RPM and TPM come from `config` (or the shared `limiter`). One client is opened
    for the whole run and closed at the end. `on_outcome` is called as each document finishes.
    """
    async with ExtractionAgent(schema, config, limiter=limiter) as agent:

        async def run(document: DocumentInput) -> DocumentOutcome[RecordT]:
            outcome = await agent.extract_outcome(document)
            if on_outcome is not None:
                try:
                    on_outcome(outcome)
                except Exception:
                    # A failing progress callback must not turn into a failed document.
                    logger.exception("on_outcome failed for document %s", document.document_key)
            return outcome

        return list(await asyncio.gather(*(run(document) for document in documents)))
