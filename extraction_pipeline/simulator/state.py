"""Live state of one simulator: settings, fault book, request log, files and batches.

All access happens on the server's event loop (handlers and control endpoints), so no locking.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from extraction_pipeline.simulator.answers import SimAnswer, answer
from extraction_pipeline.simulator.batches import BatchStore, FileStore
from extraction_pipeline.simulator.config import SimulatorConfig
from extraction_pipeline.simulator.faults import Endpoint, FaultBook
from extraction_pipeline.simulator.wire import (
    ModelRequest,
    error_body,
    parse_chat_request,
    parse_responses_request,
)

_BATCH_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/responses": "responses",
    "/v1/chat/completions": "chat",
}


@dataclass
class RequestLogEntry:
    """One model request as the simulator saw it (times are the server's `time.time()`)."""

    id: int
    endpoint: str
    model: str
    started_at: float
    in_flight_at_start: int
    file_names: list[str]
    document_excerpt: str
    fault: str | None = None
    status_code: int | None = None
    finished_at: float | None = None
    retry_count: str | None = None  # the SDK's x-stainless-retry-count header, if sent


class SimulatorState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.initial = config
        self.reset()

    def reset(self) -> None:
        """Back to the constructor's configuration, with empty log, files and batches."""
        self.config = self.initial.model_copy(deep=True)
        self.faults = FaultBook(self.config.faults, seed=self.config.seed)
        self.rng = random.Random(self.config.seed)
        self.log: list[RequestLogEntry] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.files = FileStore()
        self.batches = BatchStore(
            self.files, self.answer_batch_line, self.config.batch_phase_seconds
        )

    def parse(self, endpoint: Endpoint, body: dict[str, Any]) -> ModelRequest:
        if endpoint == "responses":
            return parse_responses_request(body, self.files.data)
        return parse_chat_request(body, self.files.data)

    def start(
        self, endpoint: Endpoint, request: ModelRequest, retry_count: str | None
    ) -> RequestLogEntry:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        entry = RequestLogEntry(
            id=len(self.log) + 1,
            endpoint=endpoint,
            model=request.model,
            started_at=time.time(),
            in_flight_at_start=self.in_flight,
            file_names=request.file_names,
            document_excerpt=request.document_text[:200],
            retry_count=retry_count,
        )
        self.log.append(entry)
        return entry

    def finish(self, entry: RequestLogEntry, status_code: int) -> None:
        self.in_flight -= 1
        entry.status_code = status_code
        entry.finished_at = time.time()

    def latency(self) -> float:
        jitter = (
            self.rng.uniform(0, self.config.jitter_seconds) if self.config.jitter_seconds else 0
        )
        return self.config.latency_seconds + jitter

    def answer_batch_line(self, url: str, body: dict[str, Any]) -> SimAnswer:
        endpoint = _BATCH_ENDPOINTS.get(url)
        if endpoint is None:
            message = f"The simulator does not batch {url}."
            return SimAnswer(400, error_body(message, "invalid_request_error"))
        request = self.parse(endpoint, body)
        fault = self.faults.decide(request.match_text, endpoint)
        if fault is not None and fault.kind == "hang":
            fault = None
        return answer(request, endpoint, fault, self.config.cached_input_tokens)

    def request_report(self) -> dict[str, Any]:
        """The control endpoint's view of the log: counts, peak concurrency, entries."""
        by_endpoint: dict[str, int] = {}
        by_fault: dict[str, int] = {}
        for entry in self.log:
            by_endpoint[entry.endpoint] = by_endpoint.get(entry.endpoint, 0) + 1
            if entry.fault:
                by_fault[entry.fault] = by_fault.get(entry.fault, 0) + 1
        return {
            "count": len(self.log),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "by_endpoint": by_endpoint,
            "by_fault": by_fault,
            "requests": [asdict(entry) for entry in self.log],
        }
