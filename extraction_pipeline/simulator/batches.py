"""In-memory Files and Batch API: uploads, a time-driven batch state machine, result files.

A batch moves validating -> in_progress -> finalizing -> completed, each phase lasting
`phase_seconds`; the status is computed from elapsed time whenever the batch is read. Its lines
are answered when it completes: 200 answers go to the output file, other statuses to the error
file (both in the `BatchRequestOutput` line format, keyed by `custom_id`). Cancel moves it to
cancelling and, one phase later, cancelled, with every line in the error file as
`batch_cancelled`. An input file that is not valid JSONL of requests for the batch's endpoint
makes the batch `failed` with `errors`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from extraction_pipeline.simulator.answers import SimAnswer
from extraction_pipeline.simulator.wire import new_id

Json = Any
LineAnswerer = Callable[[str, dict[str, Json]], SimAnswer]
FILE_PURPOSES = frozenset(
    {"assistants", "batch", "batch_output", "fine-tune", "vision", "user_data", "evals"}
)
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def to_json(self) -> dict[str, Json]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class FileStore:
    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}

    def add(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(new_id("file"), filename, purpose, data)
        self.files[stored.id] = stored
        return stored

    def data(self, file_id: str) -> bytes | None:
        stored = self.files.get(file_id)
        return stored.data if stored is not None else None


@dataclass
class _Line:
    custom_id: str
    body: dict[str, Json]


@dataclass
class SimBatch:
    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created: float
    lines: list[_Line]
    errors: list[dict[str, Json]]
    cancel_requested: float | None = None
    finished_status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: tuple[int, int] = (0, 0)  # completed, failed
    usage: dict[str, int] = field(default_factory=dict)


class BatchStore:
    """Batches over a `FileStore`; `answer_line(endpoint, body)` answers one request line."""

    def __init__(self, files: FileStore, answer_line: LineAnswerer, phase_seconds: float) -> None:
        self.files = files
        self.answer_line = answer_line
        self.phase_seconds = phase_seconds
        self.batches: dict[str, SimBatch] = {}

    def create(
        self, input_file_id: str, endpoint: str, metadata: dict[str, str] | None
    ) -> SimBatch:
        raw = self.files.data(input_file_id)
        lines, errors = (
            _parse_lines(raw, endpoint) if raw is not None else ([], [_missing(input_file_id)])
        )
        batch = SimBatch(
            id=new_id("batch"),
            endpoint=endpoint,
            input_file_id=input_file_id,
            metadata=metadata,
            created=time.time(),
            lines=lines,
            errors=errors,
        )
        self.batches[batch.id] = batch
        return batch

    def cancel(self, batch: SimBatch) -> None:
        if self.status(batch) not in TERMINAL and batch.cancel_requested is None:
            batch.cancel_requested = time.time()

    def status(self, batch: SimBatch) -> str:
        if batch.finished_status is not None:
            return batch.finished_status
        now, phase = time.time(), self.phase_seconds
        if batch.errors:
            batch.finished_status = "failed"
        elif batch.cancel_requested is not None:
            if now - batch.cancel_requested < phase:
                return "cancelling"
            self._finish(batch, cancelled=True)
        elif now - batch.created < phase:
            return "validating"
        elif now - batch.created < 2 * phase:
            return "in_progress"
        elif now - batch.created < 3 * phase:
            return "finalizing"
        else:
            self._finish(batch, cancelled=False)
        return batch.finished_status or "failed"

    def _finish(self, batch: SimBatch, *, cancelled: bool) -> None:
        outputs: list[str] = []
        failures: list[str] = []
        totals = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0}
        for line in batch.lines:
            if cancelled:
                error = {"code": "batch_cancelled", "message": "The batch was cancelled."}
                failures.append(_output_line(line.custom_id, None, error))
                continue
            sim = self.answer_line(batch.endpoint, line.body)
            response = {
                "status_code": sim.status_code,
                "request_id": new_id("req"),
                "body": sim.body,
            }
            (outputs if sim.status_code == 200 else failures).append(
                _output_line(line.custom_id, response, None)
            )
            _add_usage(totals, sim.body.get("usage"))
        if outputs:
            batch.output_file_id = self.files.add(
                f"{batch.id}_output.jsonl", "batch_output", "".join(outputs).encode()
            ).id
        if failures:
            batch.error_file_id = self.files.add(
                f"{batch.id}_error.jsonl", "batch_output", "".join(failures).encode()
            ).id
        batch.counts = (len(outputs), len(failures))
        batch.usage = totals
        batch.finished_status = "cancelled" if cancelled else "completed"

    def to_json(self, batch: SimBatch) -> dict[str, Json]:
        status = self.status(batch)
        created, phase = int(batch.created), self.phase_seconds
        done = status in TERMINAL
        usage = batch.usage
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "created_at": created,
            "in_progress_at": created + int(phase)
            if status != "validating" and not batch.errors
            else None,
            "finalizing_at": int(batch.created + 2 * phase)
            if status in ("finalizing", "completed")
            else None,
            "completed_at": int(batch.created + 3 * phase) if status == "completed" else None,
            "failed_at": created if status == "failed" else None,
            "cancelling_at": int(batch.cancel_requested) if batch.cancel_requested else None,
            "cancelled_at": int(time.time()) if status == "cancelled" else None,
            "expires_at": created + 24 * 3600,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "metadata": batch.metadata,
            "request_counts": {
                "total": len(batch.lines),
                "completed": batch.counts[0] if done else 0,
                "failed": batch.counts[1] if done else 0,
            },
            "usage": {
                "input_tokens": usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": usage["cached_tokens"]},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            }
            if usage
            else None,
        }


def _missing(file_id: str) -> dict[str, Json]:
    return {"code": "invalid_file", "line": None, "message": f"No file {file_id}", "param": None}


def _parse_lines(raw: bytes, endpoint: str) -> tuple[list[_Line], list[dict[str, Json]]]:
    lines: list[_Line] = []
    errors: list[dict[str, Json]] = []
    seen: set[str] = set()
    for number, text in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError:
            errors.append(_line_error(number, "invalid_json_line", "This line is not valid JSON."))
            continue
        custom_id, url = item.get("custom_id"), item.get("url")
        if not isinstance(custom_id, str) or custom_id in seen:
            errors.append(
                _line_error(number, "duplicate_custom_id", "custom_id missing or reused.")
            )
        elif url != endpoint:
            errors.append(_line_error(number, "mismatched_endpoint", f"url must be {endpoint}."))
        elif not isinstance(item.get("body"), dict):
            errors.append(_line_error(number, "missing_body", "body must be an object."))
        else:
            seen.add(custom_id)
            lines.append(_Line(custom_id, item["body"]))
    if not lines and not errors:
        errors.append(_line_error(None, "empty_file", "The input file has no requests."))
    return lines, errors


def _line_error(line: int | None, code: str, message: str) -> dict[str, Json]:
    return {"code": code, "line": line, "message": message, "param": None}


def _output_line(
    custom_id: str, response: dict[str, Json] | None, error: dict[str, Json] | None
) -> str:
    item = {"id": new_id("batch_req"), "custom_id": custom_id, "response": response, "error": error}
    return json.dumps(item) + "\n"


def _add_usage(totals: dict[str, int], usage: Json) -> None:
    if not isinstance(usage, dict):
        return
    totals["input_tokens"] += int(usage.get("input_tokens") or usage.get("prompt_tokens") or 0)
    totals["output_tokens"] += int(
        usage.get("output_tokens") or usage.get("completion_tokens") or 0
    )
    details = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
    totals["cached_tokens"] += int(details.get("cached_tokens", 0))
