"""Turning a parsed model request and its fault (if any) into an HTTP answer.

Shared by the live endpoints and the batch processor, so a batch line behaves like a live call.
The `hang` fault is timing only: the live endpoint sleeps before calling this; batches ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from extraction_pipeline.simulator.faults import Endpoint, FaultRule
from extraction_pipeline.simulator.wire import (
    ModelRequest,
    answer_json,
    chat_body,
    error_body,
    responses_body,
    usage_for,
)

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
DEFAULT_RETRY_AFTER_SECONDS = 1.0


@dataclass(frozen=True)
class SimAnswer:
    """An HTTP answer. `usable`: a complete, parseable record (no refusal, no cut-off): the
    answer a caller pays for and keeps. Every 200 is billed, usable or not."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    usable: bool = False

    @property
    def billed(self) -> bool:
        return self.status_code == 200


def answer(
    request: ModelRequest, endpoint: Endpoint, fault: FaultRule | None, cached_tokens: int
) -> SimAnswer:
    """The status, body and headers the simulated provider returns."""
    kind = fault.kind if fault is not None else None
    if kind == "429" and fault is not None:
        return SimAnswer(429, _rate_limit_body(request), _retry_headers(fault))
    if kind == "quota":
        body = error_body(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        )
        return SimAnswer(429, body)
    if kind == "500":
        body = error_body("The server had an error while processing your request.", "server_error")
        return SimAnswer(500, body)

    text = answer_json(request)
    if kind in ("invalid_json", "truncate"):
        # Cut mid-object: a real truncation looks exactly like this.
        text = text[: max(len(text) // 2, 1)]
    usage = usage_for(request, REFUSAL_TEXT if kind == "refuse" else text, cached_tokens)
    refusal = REFUSAL_TEXT if kind == "refuse" else None
    if endpoint == "responses":
        reason = {"truncate": "max_output_tokens", "content_filter": "content_filter"}.get(
            kind or ""
        )
        body = responses_body(
            request,
            text=None if refusal else text,
            usage=usage,
            refusal=refusal,
            incomplete_reason=reason,
        )
    else:
        finish = {"truncate": "length", "content_filter": "content_filter"}.get(kind or "", "stop")
        body = chat_body(
            request,
            text=None if refusal else text,
            usage=usage,
            refusal=refusal,
            finish_reason=finish,
        )
    return SimAnswer(200, body, usable=kind is None)


def _rate_limit_body(request: ModelRequest) -> dict[str, Any]:
    return error_body(
        f"Rate limit reached for {request.model or 'the model'} (simulated). Please try again.",
        "requests",
        "rate_limit_exceeded",
    )


def _retry_headers(fault: FaultRule) -> dict[str, str]:
    headers: dict[str, str] = {}
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.retry_after is not None or fault.retry_after_ms is None:
        seconds = (
            fault.retry_after if fault.retry_after is not None else DEFAULT_RETRY_AFTER_SECONDS
        )
        headers["retry-after"] = f"{seconds:g}"
    return headers
