"""What the simulator keeps about an uploaded file and a batch, and a batch's schedule.

These are the shapes written to the state dir (`storage.py`) and read back after a restart, so a
batch's whole timing lives in its record: status, progress and expiry are computed from the
record and the clock, never from how long this process has been running.

Schedule of a batch created at c with phase p (both fixed at creation):

    validating [c, c+p)  in_progress [c+p, c+2p)  finalizing [c+2p, c+3p)  completed at c+3p

Line i of n is done at c + p + (i+1)/n * p. A batch not completed by `expires_at` is expired
then (its lines done by `expires_at` count, the rest never run); a cancel at t makes it
cancelling until t+p, then cancelled (its lines done by t count).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Json = Any
BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
EndedStatus = Literal["failed", "completed", "expired", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"failed", "completed", "expired", "cancelled"})


class FileRecord(BaseModel):
    """An uploaded (or batch result) file, without its bytes."""

    model_config = ConfigDict(extra="forbid")

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int

    def to_json(self) -> dict[str, Json]:
        """The API's File object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class BatchInputError(BaseModel):
    """Why an input file was rejected (the API's `BatchError`, `errors.data[]` of a batch)."""

    model_config = ConfigDict(extra="forbid")

    code: str
    line: int | None = None
    message: str
    param: str | None = None


class AnsweredLine(BaseModel):
    """One request line the simulated provider ran, as it goes into the output or error file."""

    model_config = ConfigDict(extra="forbid")

    id: str
    custom_id: str
    status_code: int
    request_id: str
    body: dict[str, Json]

    def output_line(self) -> str:
        """The `BatchRequestOutput` line: a non-200 keeps `error` null, as the real API does;
        the status and the error body are in `response`."""
        response = {
            "status_code": self.status_code,
            "request_id": self.request_id,
            "body": self.body,
        }
        item = {"id": self.id, "custom_id": self.custom_id, "response": response, "error": None}
        return json.dumps(item) + "\n"


class UsageTotals(BaseModel):
    """Tokens billed for a batch's answered lines."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def add(self, usage: Json) -> None:
        """Add one answer's `usage` (Responses or Chat Completions naming)."""
        if not isinstance(usage, dict):
            return
        self.input_tokens += int(usage.get("input_tokens") or usage.get("prompt_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or usage.get("completion_tokens") or 0)
        details = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
        self.cached_tokens += int(details.get("cached_tokens", 0))

    def to_json(self) -> dict[str, Json]:
        """The API's `BatchUsage`."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


class BatchRecord(BaseModel):
    """A batch: its request, its schedule, and what has been done so far.

    While the batch is open, `answered` holds the lines run so far (in input order); when it
    ends, they move to the result files and `ended` is set. `completed` and `failed` count the
    answered lines with and without a 200; lines a cancel or expiry stopped are in neither.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None = None
    model: str | None = None
    created_at: float
    phase_seconds: float = Field(ge=0)
    expires_at: float
    total: int = Field(ge=0)
    errors: list[BatchInputError] = Field(default_factory=list)
    cancelling_at: float | None = None
    answered: list[AnsweredLine] = Field(default_factory=list)
    completed: int = 0
    failed: int = 0
    usage: UsageTotals = Field(default_factory=UsageTotals)
    ended: EndedStatus | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def in_progress_at(self) -> float:
        return self.created_at + self.phase_seconds

    @property
    def finalizing_at(self) -> float:
        return self.created_at + 2 * self.phase_seconds

    @property
    def completed_at(self) -> float:
        return self.created_at + 3 * self.phase_seconds

    @property
    def cancelled_at(self) -> float | None:
        if self.cancelling_at is None:
            return None
        return self.cancelling_at + self.phase_seconds

    @property
    def expires_before_completion(self) -> bool:
        return self.expires_at < self.completed_at

    @property
    def stopped_at(self) -> float | None:
        """When work on the lines stops short: the cancel, or an expiry before completion."""
        if self.cancelling_at is not None:
            return self.cancelling_at
        return self.expires_at if self.expires_before_completion else None

    def status_at(self, now: float) -> BatchStatus:
        """The status at `now`, from the schedule alone."""
        if self.errors:
            return "failed"
        cancelled_at = self.cancelled_at
        if cancelled_at is not None:
            return "cancelled" if now >= cancelled_at else "cancelling"
        if self.expires_before_completion and now >= self.expires_at:
            return "expired"
        if now < self.in_progress_at:
            return "validating"
        if now < self.finalizing_at:
            return "in_progress"
        return "finalizing" if now < self.completed_at else "completed"

    def reached(self, moment: float, now: float) -> bool:
        """Whether the schedule got to `moment` by `now` before a cancel or expiry stopped it."""
        stopped = self.stopped_at
        return moment <= now and (stopped is None or moment <= stopped)

    def lines_done_by(self, now: float) -> int:
        """How many lines (the first ones, in input order) are done at `now`."""
        if self.errors:
            return 0
        stopped = self.stopped_at
        moment = now if stopped is None else min(now, stopped)
        if moment >= self.finalizing_at:
            return self.total
        if moment < self.in_progress_at:
            return 0
        # Here phase_seconds > 0: in_progress_at <= moment < finalizing_at.
        share = (moment - self.in_progress_at) / self.phase_seconds
        return min(self.total, math.floor(share * self.total))
