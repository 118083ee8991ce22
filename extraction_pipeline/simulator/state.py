"""Live state of one simulator: settings, fault book, request log, files and batches.

Files and batches outlive the process when the config names a `state_dir`; the rest (settings,
faults, request log, ledger) starts afresh with each process.

All access happens on the server's event loop (handlers and control endpoints), so no locking.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from extraction_pipeline.simulator.answers import SimAnswer, answer
from extraction_pipeline.simulator.batches import BatchStore
from extraction_pipeline.simulator.config import SimulatorConfig
from extraction_pipeline.simulator.faults import Endpoint, FaultBook, fault_mix
from extraction_pipeline.simulator.files import FileStore
from extraction_pipeline.simulator.storage import StateDir
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


# Status of a request whose client hung up before it was answered (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


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
    document: str  # ModelRequest.document: which document the request is about
    document_name: str
    schema_name: str
    schema_sha256: str
    instructions_sha256: str
    document_text: str = field(repr=False, default="")
    fault: str | None = None
    status_code: int | None = None
    finished_at: float | None = None
    retry_count: str | None = None  # the SDK's x-stainless-retry-count header, if sent
    usable: bool = False  # a complete, parseable record was answered (and billed)
    abandoned: bool = False  # answered after the client had gone (still billed)


@dataclass
class DocumentLedger:
    """What the simulated provider did for one document, over all its requests: the figures
    that tell whether a document was paid for twice (`usable` > 1)."""

    document: str
    document_name: str
    requests: int = 0
    billed: int = 0  # answers with usage: every 200, usable or not
    usable: int = 0  # complete, parseable records
    abandoned: int = 0  # billed answers whose client had gone before they were sent
    faults: dict[str, int] = field(default_factory=dict)


class SimulatorState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.initial = config
        self._restart()
        storage = StateDir(Path(config.state_dir)) if config.state_dir else None
        self.files = FileStore(storage)
        self.batches = BatchStore(self.files, self.answer_batch_line, self._batch_schedule, storage)

    def reset(self) -> None:
        """Back to the constructor's configuration, with empty log, files and batches (the
        state dir's too)."""
        self._restart()
        self.files.clear()
        self.batches.clear()

    def _restart(self) -> None:
        self.config = self.initial.model_copy(deep=True)
        mix = fault_mix(self.config.fault_mix) if self.config.fault_mix else []
        self.faults = FaultBook([*self.config.faults, *mix], seed=self.config.seed)
        self.rng = random.Random(self.config.seed)
        self.log: list[RequestLogEntry] = []
        self.ledger: dict[str, DocumentLedger] = {}
        self.in_flight = 0
        self.peak_in_flight = 0

    def _batch_schedule(self) -> tuple[float, float]:
        return self.config.batch_phase_seconds, self.config.batch_expire_seconds

    def reseed(self, seed: int) -> None:
        """Fault draws and jitter start afresh from `seed`."""
        self.faults.reseed(seed)
        self.rng = random.Random(seed)

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
            document=request.document,
            document_name=request.document_name,
            schema_name=request.schema_name,
            schema_sha256=request.schema_sha256,
            instructions_sha256=request.instructions_sha256,
            document_text=request.document_text,
            retry_count=retry_count,
        )
        self.log.append(entry)
        return entry

    def finish(
        self, entry: RequestLogEntry, sim: SimAnswer | None, *, client_gone: bool = False
    ) -> None:
        """Close the entry: `sim` is what was answered (None: nothing, e.g. the client left
        during a hang, or the handler failed)."""
        self.in_flight -= 1
        entry.status_code = CLIENT_CLOSED_REQUEST if client_gone and sim is None else 500
        if sim is not None:
            entry.status_code = sim.status_code
            entry.usable = sim.usable
            entry.abandoned = client_gone
        entry.finished_at = time.time()
        self._account(entry.document, entry.document_name, entry.fault, sim, client_gone)

    def _account(
        self,
        document: str,
        name: str,
        fault: str | None,
        sim: SimAnswer | None,
        client_gone: bool = False,
    ) -> None:
        ledger = self.ledger.setdefault(document, DocumentLedger(document, name))
        ledger.requests += 1
        if fault is not None:
            ledger.faults[fault] = ledger.faults.get(fault, 0) + 1
        if sim is not None and sim.billed:
            ledger.billed += 1
            ledger.usable += sim.usable
            ledger.abandoned += client_gone

    def latency(self) -> float:
        jitter = (
            self.rng.uniform(0, self.config.jitter_seconds) if self.config.jitter_seconds else 0
        )
        return self.config.latency_seconds + jitter

    def answer_batch_line(self, url: str, body: dict[str, Any]) -> SimAnswer:
        """Answer one batch request line as the online endpoint would answer the same body: one
        fault draw, the same rules; billed answers go to the document's ledger."""
        endpoint = _BATCH_ENDPOINTS.get(url)
        if endpoint is None:
            return _bad_line(f"The simulator does not batch {url}.")
        if not body.get("model") or body.get("stream"):
            return _bad_line("A body with 'model' and without 'stream' is required.")
        try:
            request = self.parse(endpoint, body)
        except (AttributeError, TypeError, ValueError) as error:
            # A line's body is the caller's JSON: a malformed one is that line's 400, not a
            # crash of the retrieve that happens to run it.
            return _bad_line(f"Could not read the request body: {error}")
        fault = self.faults.decide(request.match_text, endpoint, request.document)
        answered_as = fault
        if fault is not None and fault.kind == "hang":
            # No client waits on a batch line: a stuck upstream ends as a server error.
            answered_as = fault.model_copy(update={"kind": "500"})
        sim = answer(request, endpoint, answered_as, self.config.cached_input_tokens)
        self._account(request.document, request.document_name, fault.kind if fault else None, sim)
        return sim

    def request_report(self, with_text: bool = False) -> dict[str, Any]:
        """The control endpoint's view of the log: counts, peak concurrency, entries (with the
        full document text when `with_text`), and per document what was billed and usable
        (batch lines due by now included)."""
        self.batches.advance_all()
        by_endpoint: dict[str, int] = {}
        by_fault: dict[str, int] = {}
        for entry in self.log:
            by_endpoint[entry.endpoint] = by_endpoint.get(entry.endpoint, 0) + 1
            if entry.fault:
                by_fault[entry.fault] = by_fault.get(entry.fault, 0) + 1
        requests = [asdict(entry) for entry in self.log]
        if not with_text:
            for logged in requests:
                del logged["document_text"]
        documents = [asdict(ledger) for ledger in self.ledger.values()]
        return {
            "count": len(self.log),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "by_endpoint": by_endpoint,
            "by_fault": by_fault,
            "requests": requests,
            "documents": documents,
            "paid_twice": [ledger["document"] for ledger in documents if ledger["usable"] > 1],
        }


def _bad_line(message: str) -> SimAnswer:
    return SimAnswer(400, error_body(message, "invalid_request_error"))
