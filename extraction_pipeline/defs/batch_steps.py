"""The document op in batch mode: hand documents to the Batch API, and collect a batch's answers.

A batch-mode run reads its documents as usual, then submits those that need the model as
batches (each batch gets a `model_batches` observation, then each document a `submitted` one)
and ends without waiting: the `batch_poller` sensor polls the batches and, when one ends,
launches a run tagged with its id. That run reads the output and error files into the
documents' outcomes, exactly as online outcomes are recorded, submits again the documents left
without a usable answer (up to EXTRACTION_MAX_ATTEMPTS submissions), and records that it
collected them. A document waiting in another open batch is never submitted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType

import dagster as dg
import openai

from extraction_pipeline.core.documents.pdf import PdfDocumentInfo
from extraction_pipeline.core.extraction.batch import BatchApi, BatchState, collect, prepare, split
from extraction_pipeline.core.extraction.outcomes import ExtractionJob
from extraction_pipeline.core.extraction.records import ExtractionRecord
from extraction_pipeline.core.model.results import BatchRequest
from extraction_pipeline.instance.batches import BatchEntry, collected_event, submitted_event
from extraction_pipeline.instance.names import EXTRACTION_KEY
from extraction_pipeline.instance.outcomes import submission_metadata

LOST = "lost"  # the provider no longer knows the batch: every document is submitted again


class BatchSubmission:
    """Documents gathered as their sources are read (the `ExtractionStream` interface the op
    drives), then settled at once where no request is needed, and submitted in batches."""

    def __init__(self, job: ExtractionJob, attempt: int = 1) -> None:
        self.job = job
        self.attempt = attempt
        self._keys: list[str] = []
        self._read: dict[str, PdfDocumentInfo] = {}
        self._requests: list[BatchRequest] = []

    def __enter__(self) -> BatchSubmission:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def submit(self, key: str, info: PdfDocumentInfo | None = None) -> None:
        self._keys.append(key)
        if info is not None:
            self._read[key] = info

    def ready(self) -> list[ExtractionRecord]:
        return []

    def close(self) -> None:
        return None

    def calls_in_flight(self) -> int:
        return 0

    def interrupt(self) -> list[ExtractionRecord]:
        return []

    def remaining(self) -> Iterator[ExtractionRecord]:
        """The documents that need no request: served from the store, or unreadable."""
        prepared = prepare(self.job, self._keys, self._read)
        self._requests = prepared.requests
        for outcome in prepared.settled:
            self.job.records.save(outcome)
            yield outcome

    def remaining_groups(self, window_seconds: float) -> Iterator[list[ExtractionRecord]]:
        yield list(self.remaining())

    def submit_batches(self, log: logging.Logger) -> Iterator[dg.AssetObservation]:
        """Submit what `remaining` left, one batch per input file the API allows; each batch's
        events right after it is created, so a step retry does not submit it twice."""
        if not self._requests:
            return
        config = self.job.config
        with BatchApi(config) as api:
            for group in split(self._requests):
                keys = [request.custom_id for request in group]
                metadata = {"run_id": self.job.run_id or "", "attempt": str(self.attempt)}
                batch_id = api.submit(group, metadata)
                log.info(f"batch {batch_id}: {len(keys)} documents submitted")
                # The batch first: from this event on, its documents are busy everywhere.
                yield submitted_event(batch_id, keys, self.attempt, config.model, config.api_mode)
                for key in keys:
                    document = self.job.registry.get(key)
                    yield dg.AssetObservation(
                        asset_key=EXTRACTION_KEY,
                        partition=key,
                        metadata=submission_metadata(
                            document.file_name if document else "", batch_id, self.attempt
                        ),
                    )


def collect_batch(
    job: ExtractionJob,
    entry: BatchEntry,
    max_attempts: int,
    keys: Sequence[str],
    log: logging.Logger,
) -> Iterator[ExtractionRecord | dg.AssetObservation]:
    """The outcomes of `keys` that the batch of `entry` answered; then either their submission
    in a new batch (the documents it left without a usable answer) or, when `max_attempts`
    submissions were made, their final failure; then the record that `keys` were collected.
    Read with the model and API the batch was asked with, whatever the settings say now."""
    batch_id, attempt = entry.batch_id, entry.attempt
    config = replace(
        job.config,
        model=entry.model or job.config.model,
        api_mode=entry.api_mode or job.config.api_mode,  # type: ignore[arg-type]
    )
    job = replace(job, config=config)
    with BatchApi(job.config) as api:
        try:
            state = api.state(batch_id)
        except openai.NotFoundError:
            log.warning(f"batch {batch_id} is unknown to the provider: submitting it again")
            state = BatchState(batch_id, LOST)
        results = api.results(state) if state.status != LOST else b""
    collected = collect(job, batch_id, keys, results)
    log.info(
        f"batch {batch_id} ({state.status}): {len(collected.outcomes)} answers for "
        f"{len(keys)} documents, {len(collected.unanswered)} to submit again"
    )
    yield from collected.outcomes
    if collected.unanswered and attempt < max_attempts:
        again = BatchSubmission(job, attempt + 1)
        for key in collected.unanswered:
            again.submit(key)
        yield from again.remaining()
        yield from again.submit_batches(log)
    elif collected.unanswered:
        answered = {o.document_key: o for o in collected.outcomes}
        for key in collected.unanswered:
            yield _given_up(job, key, batch_id, state.status, attempt, answered.get(key))
    yield collected_event(batch_id, keys)


def _given_up(
    job: ExtractionJob,
    key: str,
    batch_id: str,
    status: str,
    attempts: int,
    last: ExtractionRecord | None,
) -> ExtractionRecord:
    """A document the batches could not answer in `attempts` submissions: failed for good."""
    document = job.registry.get(key)
    reason = last.error_message if last is not None and last.error_message else status
    outcome = ExtractionRecord(
        document_key=key,
        file_name=document.file_name if document else "",
        sha256=document.sha256 if document else "",
        pages=last.pages if last is not None else None,
        status="failed",
        call=last.call if last is not None else None,
        error_kind="batch_no_answer",
        error_message=f"no usable answer after {attempts} batch submissions "
        f"(last: batch {batch_id}, {reason})",
        retryable=False,
        extracted_at=datetime.now(UTC),
        run_id=job.run_id,
        batch_id=batch_id,
    )
    job.records.save(outcome)
    return outcome
