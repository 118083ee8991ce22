"""Typed extraction failures: each says what went wrong (`kind`) and whether retrying can help.

Transient kinds (rate limits, server errors, timeouts, connection drops) are retried by the agent
and, if they persist, left to the orchestrator's retry policy. Permanent kinds (refusal,
truncation, schema violation after repair, bad request, auth, exhausted quota) will fail the same
way on the same input and need a human or a configuration change.
"""

from __future__ import annotations

import email.utils
import time
from typing import ClassVar, Literal

import openai

from extraction_pipeline.core.model.types import CallRecord

ErrorKind = Literal[
    "refused",
    "truncated",
    "schema_violation",
    "rate_limited",
    "quota",
    "server_error",
    "timeout",
    "connection",
    "bad_request",
    "auth",
    "unreadable_input",
    "internal",
]


class ExtractionError(Exception):
    """Base of all extraction failures. `call` carries the metadata of the failed extraction."""

    kind: ClassVar[ErrorKind] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        call: CallRecord | None = None,
        request_id: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.call = call
        self.request_id = request_id
        self.retry_after_seconds = retry_after_seconds

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class ModelRefused(ExtractionError):
    kind = "refused"


class OutputTruncated(ExtractionError):
    kind = "truncated"


class SchemaViolation(ExtractionError):
    kind = "schema_violation"


class BadRequest(ExtractionError):
    kind = "bad_request"


class AuthFailed(ExtractionError):
    kind = "auth"


class QuotaExhausted(ExtractionError):
    kind = "quota"


class UnreadableInput(ExtractionError):
    kind = "unreadable_input"


class InternalError(ExtractionError):
    kind = "internal"


class RateLimited(ExtractionError):
    kind = "rate_limited"
    retryable = True


class ServerError(ExtractionError):
    kind = "server_error"
    retryable = True


class RequestTimedOut(ExtractionError):
    kind = "timeout"
    retryable = True


class ConnectionFailed(ExtractionError):
    kind = "connection"
    retryable = True


# Statuses the provider documents as "try again": request timeout, conflict, and all 5xx.
_TRANSIENT_STATUSES = frozenset({408, 409})


def classify_api_error(error: openai.OpenAIError) -> ExtractionError:
    """Map an SDK exception to the typed extraction error it means for the pipeline."""
    if isinstance(error, openai.APITimeoutError):
        return RequestTimedOut(f"no answer within the timeout ({error})")
    if isinstance(error, openai.APIConnectionError):
        return ConnectionFailed(f"cannot reach the model endpoint ({error})")
    if isinstance(error, openai.APIStatusError):
        return _classify_status(error)
    if isinstance(error, openai.APIResponseValidationError):
        return ServerError(f"malformed response from the model endpoint ({error})")
    return InternalError(f"{type(error).__name__}: {error}")


def _classify_status(error: openai.APIStatusError) -> ExtractionError:
    return classify_status(
        error.status_code,
        _error_message(error),
        code=error.code,
        request_id=error.request_id,
        retry_after=retry_after_seconds(error),
    )


def classify_status(
    status: int,
    message: str,
    *,
    code: str | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> ExtractionError:
    """The typed error an HTTP status means: for an online call, or a batch output line."""
    detail = f"HTTP {status}: {message}"
    if status == 429:
        if code == "insufficient_quota":
            return QuotaExhausted(detail, request_id=request_id)
        return RateLimited(detail, request_id=request_id, retry_after_seconds=retry_after)
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return ServerError(detail, request_id=request_id, retry_after_seconds=retry_after)
    if status in (401, 403):
        return AuthFailed(detail, request_id=request_id)
    return BadRequest(detail, request_id=request_id)


def _error_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return error.message


def retry_after_seconds(error: openai.APIStatusError) -> float | None:
    """The server's requested wait: `retry-after-ms`, else `retry-after` (seconds or HTTP date)."""
    headers = error.response.headers
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def is_retryable_kind(kind: ErrorKind) -> bool:
    """Whether failures of this kind may succeed on a later attempt."""
    return kind in {"rate_limited", "server_error", "timeout", "connection"}
