"""The Batch API over a `FileStore`: batches that run on a schedule, with result files.

A batch's schedule (`records.BatchRecord`) is fixed when it is created, from the live settings
`batch_phase_seconds` and `batch_expire_seconds`; changing them later affects new batches only,
as the real API never moves an open batch's `expires_at`. Its status is computed from that
schedule and the clock, so a batch in a state dir goes on progressing while the simulator is
down.

Work happens when a batch is read (retrieve, list, cancel, the request report): the lines whose
time has come are answered then, in input order, through `answer_line`, so fault rules draw once
per line as for an online call. When the schedule reaches an end, the result files are written:
200 answers (refusals included) to the output file; other answers (status and error body in
`response`, `error` null) and the lines a cancel or expiry stopped (`response` null, `error.code`
`batch_cancelled` or `batch_expired`) to the error file. A file with no lines is not created.
Result lines come in an order of their own, as the real API's do: readers join on custom_id.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from extraction_pipeline.simulator.answers import SimAnswer
from extraction_pipeline.simulator.batch_input import (
    BatchLine,
    StopCode,
    missing_input,
    parse_input,
    stopped_line,
)
from extraction_pipeline.simulator.files import FileStore
from extraction_pipeline.simulator.records import (
    AnsweredLine,
    BatchRecord,
    BatchStatus,
    EndedStatus,
)
from extraction_pipeline.simulator.storage import StateDir
from extraction_pipeline.simulator.wire import new_id

logger = logging.getLogger(__name__)
Json = Any
LineAnswerer = Callable[[str, dict[str, Json]], SimAnswer]
# (phase seconds, seconds until expiry) for a batch created now: the live settings.
ScheduleSettings = Callable[[], tuple[float, float]]


class BatchStore:
    """Batches by id; `answer_line(endpoint, body)` runs one request line."""

    def __init__(
        self,
        files: FileStore,
        answer_line: LineAnswerer,
        schedule: ScheduleSettings,
        storage: StateDir | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.files = files
        self.answer_line = answer_line
        self.schedule = schedule
        self.clock = clock
        self._storage = storage
        self._batches: dict[str, BatchRecord] = {}
        # Input lines of open batches, read from their input file when first needed.
        self._lines: dict[str, list[BatchLine]] = {}
        if storage is not None:
            self._batches = {record.id: record for record in storage.load_batches()}

    def create(
        self, input_file_id: str, endpoint: str, metadata: dict[str, str] | None
    ) -> BatchRecord:
        raw = self.files.data(input_file_id)
        lines, errors = (
            parse_input(raw, endpoint) if raw is not None else ([], [missing_input(input_file_id)])
        )
        phase_seconds, expire_seconds = self.schedule()
        now = self.clock()
        model = lines[0].body.get("model") if lines else None
        record = BatchRecord(
            id=new_id("batch", self._batches),
            endpoint=endpoint,
            input_file_id=input_file_id,
            metadata=metadata,
            model=model if isinstance(model, str) else None,
            created_at=now,
            phase_seconds=phase_seconds,
            expires_at=now + expire_seconds,
            total=0 if errors else len(lines),
            errors=errors,
            ended="failed" if errors else None,
        )
        if not errors:
            self._lines[record.id] = lines
        self._batches[record.id] = record
        self._save(record)
        return record

    def get(self, batch_id: str) -> BatchRecord | None:
        return self._batches.get(batch_id)

    def newest_first(self) -> list[BatchRecord]:
        return sorted(self._batches.values(), key=lambda record: record.created_at, reverse=True)

    def cancel(self, record: BatchRecord) -> None:
        """Start cancelling an open batch (lines done by now keep their answers); a batch that
        has ended, or is already cancelling, stays as it is."""
        now = self.clock()
        self.advance(record, now)
        if record.ended is None and record.cancelling_at is None:
            record.cancelling_at = now
            self._save(record)

    def advance_all(self) -> None:
        now = self.clock()
        for record in self._batches.values():
            self.advance(record, now)

    def advance(self, record: BatchRecord, now: float | None = None) -> None:
        """Answer the lines done by `now`; write the result files if the batch has ended."""
        if record.ended is not None:
            return
        now = self.clock() if now is None else now
        due = record.lines_done_by(now)
        changed = due > len(record.answered)
        if changed:
            for line in self._input(record)[len(record.answered) : due]:
                self._run(record, line)
        ended = _ended(record.status_at(now))
        if ended is not None:
            self._end(record, ended)
        if changed or ended is not None:
            self._save(record)

    def clear(self) -> None:
        """Forget every batch (on disk too)."""
        self._batches.clear()
        self._lines.clear()
        if self._storage is not None:
            self._storage.clear_batches()

    def to_json(self, record: BatchRecord) -> dict[str, Json]:
        """The API's Batch object as of now (advancing the batch first)."""
        now = self.clock()
        self.advance(record, now)
        status = record.status_at(now)
        failed = bool(record.errors)

        def when(moment: float) -> int | None:
            return int(moment) if not failed and record.reached(moment, now) else None

        cancelled_at = record.cancelled_at
        return {
            "id": record.id,
            "object": "batch",
            "endpoint": record.endpoint,
            "input_file_id": record.input_file_id,
            "completion_window": "24h",
            "status": status,
            "model": record.model,
            "created_at": int(record.created_at),
            "in_progress_at": when(record.in_progress_at),
            "finalizing_at": when(record.finalizing_at),
            "completed_at": int(record.completed_at) if status == "completed" else None,
            "failed_at": int(record.created_at) if failed else None,
            "expires_at": int(record.expires_at),
            "expired_at": int(record.expires_at) if status == "expired" else None,
            "cancelling_at": _int(record.cancelling_at),
            "cancelled_at": _int(cancelled_at) if status == "cancelled" else None,
            "output_file_id": record.output_file_id,
            "error_file_id": record.error_file_id,
            "errors": {"object": "list", "data": [error.model_dump() for error in record.errors]}
            if failed
            else None,
            "metadata": record.metadata,
            "request_counts": {
                "total": record.total,
                "completed": record.completed,
                "failed": record.failed,
            },
            "usage": None if failed else record.usage.to_json(),
        }

    def _input(self, record: BatchRecord) -> list[BatchLine]:
        lines = self._lines.get(record.id)
        if lines is None:
            raw = self.files.data(record.input_file_id)
            if raw is None:
                logger.warning("batch %s: input file %s is gone", record.id, record.input_file_id)
            lines = parse_input(raw, record.endpoint)[0] if raw is not None else []
            self._lines[record.id] = lines
        return lines

    def _run(self, record: BatchRecord, line: BatchLine) -> None:
        sim = self.answer_line(record.endpoint, line.body)
        answered = AnsweredLine(
            id=new_id("batch_req"),
            custom_id=line.custom_id,
            status_code=sim.status_code,
            request_id=new_id("req"),
            body=sim.body,
        )
        record.answered.append(answered)
        if sim.status_code == 200:
            record.completed += 1
            record.usage.add(sim.body.get("usage"))
        else:
            record.failed += 1

    def _end(self, record: BatchRecord, ended: EndedStatus) -> None:
        outputs = [(a.custom_id, a.output_line()) for a in record.answered if a.status_code == 200]
        errors = [(a.custom_id, a.output_line()) for a in record.answered if a.status_code != 200]
        if ended in ("cancelled", "expired"):
            code: StopCode = "batch_cancelled" if ended == "cancelled" else "batch_expired"
            stopped = self._input(record)[len(record.answered) :]
            errors += [(line.custom_id, stopped_line(line.custom_id, code)) for line in stopped]
        record.output_file_id = self._result_file(record, "output", outputs)
        record.error_file_id = self._result_file(record, "error", errors)
        record.answered = []
        record.ended = ended
        self._lines.pop(record.id, None)

    def _result_file(
        self, record: BatchRecord, kind: str, lines: list[tuple[str, str]]
    ) -> str | None:
        if not lines:
            return None

        # Not input order, as with the real API, so a reader that forgets custom_id fails here.
        def place(item: tuple[str, str]) -> bytes:
            return hashlib.blake2b(f"{record.id}:{item[0]}".encode(), digest_size=8).digest()

        data = "".join(text for _, text in sorted(lines, key=place)).encode()
        return self.files.add(f"{record.id}_{kind}.jsonl", "batch_output", data).id

    def _save(self, record: BatchRecord) -> None:
        if self._storage is not None:
            self._storage.save_batch(record)


def _ended(status: BatchStatus) -> EndedStatus | None:
    match status:
        case "completed" | "expired" | "cancelled" | "failed":
            return status
        case _:
            return None


def _int(moment: float | None) -> int | None:
    return None if moment is None else int(moment)
