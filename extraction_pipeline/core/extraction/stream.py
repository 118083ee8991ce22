"""Extracting registered documents: cache first, then the agent, one outcome per document.

Results are stored as each document finishes, so a run that dies half-way keeps everything it
paid for; the next attempt finds those results in the cache. A failure of any kind, expected or
not, becomes that document's outcome: nothing is dropped. A document whose source cannot be read
gets an outcome too (`read_source`), so every document the pipeline ran has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from pydantic import BaseModel

from extraction_pipeline.core.documents.pdf import PdfDocumentInfo, UnreadablePdf, read_pdf
from extraction_pipeline.core.extraction.outcomes import (
    ExtractionJob,
    error_outcome,
    failure_outcome,
    success_outcome,
)
from extraction_pipeline.core.extraction.records import (
    CachedExtraction,
    CallSummary,
    ExtractionRecord,
    cache_key,
)
from extraction_pipeline.core.model.agent import ExtractionAgent
from extraction_pipeline.core.model.errors import ExtractionError
from extraction_pipeline.core.model.prompt import schema_fingerprint
from extraction_pipeline.core.model.ratelimit import RateLimiter
from extraction_pipeline.core.model.types import DocumentInput

log = logging.getLogger(__name__)


class ExtractionStream:
    """Documents go in as they become ready (`submit`), outcomes come out as they are stored.

    The model calls run on an event loop in a worker thread, under one agent (one client, one
    concurrency and rate limiter), so the caller's thread stays free to read the next document
    and record each outcome (e.g. write a Dagster event) while calls are in flight.
    Use as a context manager; `close()` says no more documents will come.
    """

    def __init__(self, job: ExtractionJob) -> None:
        self.job = job
        self.fingerprint = schema_fingerprint(job.schema)
        self._outcomes: queue.Queue[ExtractionRecord | _Done] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._inbox: asyncio.Queue[tuple[str, PdfDocumentInfo | None] | _Done] | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        # Not a daemon thread: a process that exits without closing the stream (its caller was
        # interrupted somewhere else) still waits for the calls in flight; see `_watch_caller`.
        self._caller = threading.current_thread()
        self._thread = threading.Thread(target=self._run, name="extraction", daemon=False)
        self._submitted: set[str] = set()
        self._pending = 0
        self._closed = False
        self._interrupted = False
        self._agent: ExtractionAgent[BaseModel] | None = None
        self._server: asyncio.Task[None] | None = None
        self._tasks: dict[asyncio.Task[None], str] = {}

    def __enter__(self) -> ExtractionStream:
        self._thread.start()
        self._started.wait()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
            self._thread.join()
        else:  # left early (an error, or a generator closed mid-way): keep what is paid for
            self.interrupt()

    def interrupt(self) -> list[ExtractionRecord]:
        """Stop early. Documents not sent yet are dropped (they have no outcome; the next attempt
        takes them); calls already on the wire get `job.stop_grace_seconds` to answer, and their
        outcomes are stored as usual. Returns the outcomes stored and not taken yet."""
        if not self._interrupted:
            self._interrupted = self._closed = True
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                self._loop.call_soon_threadsafe(self._stop)
            self._thread.join(self.job.stop_grace_seconds + STOP_JOIN_MARGIN_SECONDS)
        return self.ready()

    def calls_in_flight(self) -> int:
        return len(self._agent.calls_in_flight) if self._agent is not None else 0

    def submit(self, key: str, info: PdfDocumentInfo | None = None) -> None:
        """Queue one document; `info` is its already-read text (else it is read here)."""
        if key in self._submitted:
            return  # a key asked twice is extracted (and paid) once
        self._submitted.add(key)
        self._pending += 1
        self._loop.call_soon_threadsafe(self._put, (key, info))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.call_soon_threadsafe(self._put, _DONE)

    def ready(self) -> list[ExtractionRecord]:
        """Outcomes stored so far and not yet taken; never waits."""
        taken: list[ExtractionRecord] = []
        while self._pending:
            try:
                item = self._outcomes.get_nowait()
            except queue.Empty:
                break
            taken.append(self._take(item))
        return taken

    def remaining(self) -> Iterator[ExtractionRecord]:
        """Every outcome not taken yet, waiting for each; call after `close()`."""
        while self._pending:
            yield self._take(self._outcomes.get())

    def remaining_groups(self, window_seconds: float) -> Iterator[list[ExtractionRecord]]:
        """`remaining()` in groups: each wait for an outcome also takes those stored within
        `window_seconds` of it, so the caller can record them together."""
        while self._pending:
            group = [self._take(self._outcomes.get())]
            deadline = time.monotonic() + window_seconds
            while self._pending and (left := deadline - time.monotonic()) > 0:
                try:
                    group.append(self._take(self._outcomes.get(timeout=left)))
                except queue.Empty:
                    break
            yield group

    def _take(self, item: ExtractionRecord | _Done) -> ExtractionRecord:
        if isinstance(item, _Done):
            raise RuntimeError("extraction stopped early") from self._failure
        self._pending -= 1
        return item

    def _put(self, item: tuple[str, PdfDocumentInfo | None] | _Done) -> None:
        assert self._inbox is not None
        self._inbox.put_nowait(item)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:
            self._failure = error
            log.exception("the extraction loop failed")
            self._outcomes.put(_DONE)
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._inbox = asyncio.Queue()
        self._server = asyncio.current_task()
        self._started.set()
        config = self.job.config
        limiter = RateLimiter(
            max_concurrency=config.max_concurrency,
            rpm=config.rpm,
            tpm=config.tpm,
            shared=self.job.shared_limits,
        )
        try:
            async with ExtractionAgent(self.job.schema, config, limiter=limiter) as agent:
                self._agent = agent
                watch = asyncio.create_task(self._watch_caller())
                try:
                    while not isinstance(item := await self._inbox.get(), _Done):
                        key, info = item
                        self._tasks[asyncio.create_task(self._one(agent, key, info))] = key
                    if self._tasks:  # `wait`, not `gather`: a stop must not cancel them all
                        await asyncio.wait(self._tasks)
                except asyncio.CancelledError:  # `interrupt`, wherever the loop was
                    await self._drain(agent)
                self._server = None  # from here on, a late `interrupt` has nothing to stop
                watch.cancel()
        finally:
            if self.job.shared_limits is not None:
                self.job.shared_limits.close()  # its slots are free whatever happened

    async def _watch_caller(self) -> None:
        """Stop as `interrupt` does when the caller's thread ends without closing the stream:
        an interrupt that reached the caller outside its own code (e.g. inside Dagster, between
        two events) ends the run without unwinding it, and the process then exits."""
        while self._caller.is_alive():
            await asyncio.sleep(CALLER_WATCH_SECONDS)
        log.warning("the caller stopped without closing the extraction stream: stopping")
        self._stop()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.cancel()

    async def _drain(self, agent: ExtractionAgent[BaseModel]) -> None:
        """Cancel what has not been sent; give what has been sent the grace period."""
        sent = []
        for task, key in self._tasks.items():
            if key in agent.calls_in_flight:
                sent.append(task)
            else:
                task.cancel()
        if sent:
            _, late = await asyncio.wait(sent, timeout=self.job.stop_grace_seconds)
            for task in late:
                log.warning(
                    "document %s: no answer within the stop grace period", self._tasks[task]
                )
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _one(
        self, agent: ExtractionAgent[BaseModel], key: str, info: PdfDocumentInfo | None
    ) -> None:
        try:
            outcome = await self._extract(agent, key, info)
        except Exception as error:  # never lose a document: record what went wrong
            log.exception("document %s: extraction failed unexpectedly", key)
            outcome = failure_outcome(
                key, None, None, "internal", f"internal: {error}", self.job.run_id
            )
        try:
            self.job.records.save(outcome)
        except Exception:
            log.exception("document %s: the outcome could not be stored", key)
        self._outcomes.put(outcome)

    async def _extract(
        self, agent: ExtractionAgent[BaseModel], key: str, info: PdfDocumentInfo | None
    ) -> ExtractionRecord:
        job = self.job
        document = job.registry.get(key)
        if document is None:
            message = f"no registration for {key}"
            return failure_outcome(key, None, None, "not_registered", message, job.run_id)
        key_of_result = cache_key(document.sha256, self.fingerprint, job.config)
        cached = job.records.cached(key_of_result)
        if cached is not None:
            return success_outcome(document, cached.pages, cached, job, cache_hit=True)
        data = job.registry.original(document)
        try:
            info = info or read_pdf(data, job.pdf_limits)
        except UnreadablePdf as error:
            message = f"unreadable_input: {type(error).__name__}: {error}"
            return failure_outcome(key, document, None, "unreadable_input", message, job.run_id)
        outcome = await agent.extract_outcome(
            DocumentInput(
                document_key=key,
                file_name=document.file_name,
                pdf_bytes=data,
                page_texts=info.page_texts,
                has_text_layer=info.has_text_layer,
            )
        )
        if outcome.result is None:
            failure = outcome.error or ExtractionError("no result and no error")
            return error_outcome(document, info.page_count, failure, job)
        call = CallSummary.from_call(outcome.result.call)
        record = outcome.result.record.model_dump(mode="json")
        result = CachedExtraction(record=record, call=call, pages=info.page_count)
        job.records.remember(key_of_result, result)
        return success_outcome(document, info.page_count, result, job, cache_hit=False)


class _Done:
    pass


_DONE = _Done()
CALLER_WATCH_SECONDS = 0.25
# How long `interrupt` waits beyond the grace period for the loop to wind down.
STOP_JOIN_MARGIN_SECONDS = 5.0


def extract_documents(
    job: ExtractionJob,
    keys: Sequence[str],
    read: Mapping[str, PdfDocumentInfo] | None = None,
    on_outcome: Callable[[ExtractionRecord], None] | None = None,
) -> list[ExtractionRecord]:
    """Extract `keys`; one outcome per key, in the order of `keys`.

    `read` holds documents already opened by the caller, so they are not parsed twice.
    `on_outcome` is called as each outcome is stored.
    """
    outcomes: dict[str, ExtractionRecord] = {}
    with ExtractionStream(job) as stream:
        for key in keys:
            stream.submit(key, (read or {}).get(key))
        stream.close()
        for outcome in stream.remaining():
            outcomes[outcome.document_key] = outcome
            if on_outcome is not None:
                on_outcome(outcome)
    return [outcomes[key] for key in dict.fromkeys(keys)]
