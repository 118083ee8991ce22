"""A batch's input JSONL read into request lines, and the result lines of requests never run.

An input line is `{"custom_id", "method": "POST", "url", "body"}`; a file with a bad line (not
JSON, custom_id missing or reused, url other than the batch's endpoint, no body) is rejected as a
whole with one `BatchInputError` per bad line, as the real API's validation does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from extraction_pipeline.simulator.records import BatchInputError
from extraction_pipeline.simulator.wire import new_id

Json = Any
StopCode = Literal["batch_cancelled", "batch_expired"]

# The real API's wording for lines a cancel or expiry stopped before they ran.
STOP_MESSAGES: dict[StopCode, str] = {
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
    "batch_expired": "This request could not be executed before the completion window expired.",
}


@dataclass(frozen=True)
class BatchLine:
    """One request of a batch."""

    custom_id: str
    body: dict[str, Json]


def parse_input(raw: bytes, endpoint: str) -> tuple[list[BatchLine], list[BatchInputError]]:
    """The request lines of an input file, and why it is invalid (empty when it is valid)."""
    lines: list[BatchLine] = []
    errors: list[BatchInputError] = []
    seen: set[str] = set()
    for number, text in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError:
            item = None
        if not isinstance(item, dict):
            errors.append(_error(number, "invalid_json_line", "This line is not a JSON object."))
            continue
        custom_id, url = item.get("custom_id"), item.get("url")
        if not isinstance(custom_id, str) or custom_id in seen:
            errors.append(_error(number, "duplicate_custom_id", "custom_id missing or reused."))
        elif url != endpoint:
            errors.append(_error(number, "mismatched_endpoint", f"url must be {endpoint}."))
        elif not isinstance(item.get("body"), dict):
            errors.append(_error(number, "missing_body", "body must be an object."))
        else:
            seen.add(custom_id)
            lines.append(BatchLine(custom_id, item["body"]))
    if not lines and not errors:
        errors.append(_error(None, "empty_file", "The input file has no requests."))
    return lines, errors


def missing_input(file_id: str) -> BatchInputError:
    return BatchInputError(code="invalid_file", message=f"No file {file_id}")


def stopped_line(custom_id: str, code: StopCode) -> str:
    """The error-file line of a request that never ran: no response, an `error` instead."""
    error = {"code": code, "message": STOP_MESSAGES[code]}
    item = {"id": new_id("batch_req"), "custom_id": custom_id, "response": None, "error": error}
    return json.dumps(item) + "\n"


def _error(line: int | None, code: str, message: str) -> BatchInputError:
    return BatchInputError(code=code, line=line, message=message)
