"""Batches handed to the provider's Batch API, as Dagster's event log records them.

Each batch is a `model_batches` observation when submitted (its id, documents, attempt, and
the model and API it was asked with), another when the provider says it ended (its final
status and counts), and one per run that collected its answers (the documents it recorded). A
batch is open until every document of it was collected: a collecting run that failed (the
provider unreachable) leaves it open, and the sensor launches another. Which batches are open,
and which documents wait in one, is read back here, by the sensor that polls them, the
schedules (a document in an open batch is busy), every document run (it does not extract or
submit such a document again), `status` and the `batch` commands. Nothing about a batch lives
outside the event log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg

from extraction_pipeline.core.extraction.batch import BatchState
from extraction_pipeline.instance.names import MODEL_BATCHES_KEY

SUBMITTED, ENDED, COLLECTED = "submitted", "ended", "collected"
PAGE = 1000


@dataclass(frozen=True)
class BatchEntry:
    """One batch: what was submitted, and (once it ended) how it ended."""

    batch_id: str
    documents: tuple[str, ...]
    attempt: int
    submitted_at: float
    run_id: str
    model: str = ""
    api_mode: str = ""
    status: str = SUBMITTED  # the provider's final status once ended
    ended_at: float | None = None
    completed: int = 0
    failed: int = 0
    collected: frozenset[str] = frozenset()

    @property
    def has_ended(self) -> bool:
        return self.ended_at is not None

    @property
    def uncollected(self) -> tuple[str, ...]:
        return tuple(key for key in self.documents if key not in self.collected)

    @property
    def is_open(self) -> bool:
        """Not every document's answer (or its absence) has been recorded yet."""
        return bool(self.uncollected)

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "documents": len(self.documents),
            "attempt": self.attempt,
            "submitted_at": self.submitted_at,
            "run_id": self.run_id,
            "status": self.status if self.has_ended else "open",
            "collected": len(self.collected),
            "ended_at": self.ended_at,
            "completed": self.completed,
            "failed": self.failed,
        }


def submitted_event(
    batch_id: str, documents: Sequence[str], attempt: int, model: str, api_mode: str
) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=MODEL_BATCHES_KEY,
        metadata={
            "event": SUBMITTED,
            "batch_id": batch_id,
            "attempt": attempt,
            "model": model,
            "api_mode": api_mode,
            "document_count": len(documents),
            "documents": dg.MetadataValue.json(list(documents)),
        },
    )


def collected_event(batch_id: str, documents: Sequence[str]) -> dg.AssetObservation:
    """A run recorded these documents' answers (or submitted them again): they are done here."""
    return dg.AssetObservation(
        asset_key=MODEL_BATCHES_KEY,
        metadata={
            "event": COLLECTED,
            "batch_id": batch_id,
            "document_count": len(documents),
            "documents": dg.MetadataValue.json(list(documents)),
        },
    )


def ended_event(state: BatchState) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=MODEL_BATCHES_KEY,
        metadata={
            "event": ENDED,
            "batch_id": state.batch_id,
            "status": state.status,
            "completed": state.completed,
            "failed": state.failed,
        },
    )


def batch_entries(instance: dg.DagsterInstance) -> list[BatchEntry]:
    """Every batch, oldest first."""
    entries: dict[str, BatchEntry] = {}
    cursor = None
    while True:
        result = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=MODEL_BATCHES_KEY),
            limit=PAGE,
            cursor=cursor,
            ascending=True,
        )
        for record in result.records:
            _fold(entries, record)
        if not result.has_more:
            return list(entries.values())
        cursor = result.cursor


def open_batches(instance: dg.DagsterInstance) -> list[BatchEntry]:
    return [entry for entry in batch_entries(instance) if entry.is_open]


def documents_in_open_batches(instance: dg.DagsterInstance) -> dict[str, str]:
    """Document key -> the open batch it waits in (submitted, its answer not recorded yet)."""
    return waiting_documents(batch_entries(instance))


def waiting_documents(entries: Sequence[BatchEntry]) -> dict[str, str]:
    """`documents_in_open_batches` of entries already read (a later batch wins)."""
    return {key: entry.batch_id for entry in entries for key in entry.uncollected}


def find_batch(instance: dg.DagsterInstance, batch_id: str | None) -> BatchEntry | None:
    """The batch with this id, or the last submitted one when `batch_id` is None."""
    entries = batch_entries(instance)
    if batch_id is None:
        return entries[-1] if entries else None
    return next((entry for entry in entries if entry.batch_id == batch_id), None)


def _fold(entries: dict[str, BatchEntry], record: dg.EventLogRecord) -> None:
    observation = record.asset_observation
    if observation is None:
        return
    values: dict[str, Any] = {
        name: getattr(value, "value", value) for name, value in observation.metadata.items()
    }
    batch_id = str(values.get("batch_id") or "")
    if not batch_id:
        return
    if values.get("event") == SUBMITTED:
        entries[batch_id] = BatchEntry(
            batch_id=batch_id,
            documents=tuple(values.get("documents") or ()),
            attempt=int(values.get("attempt") or 1),
            submitted_at=record.timestamp,
            run_id=record.run_id,
            model=str(values.get("model") or ""),
            api_mode=str(values.get("api_mode") or ""),
        )
    elif values.get("event") == ENDED and batch_id in entries:
        entries[batch_id] = replace(
            entries[batch_id],
            status=str(values.get("status") or "ended"),
            ended_at=record.timestamp,
            completed=int(values.get("completed") or 0),
            failed=int(values.get("failed") or 0),
        )
    elif values.get("event") == COLLECTED and batch_id in entries:
        entry = entries[batch_id]
        done = entry.collected | frozenset(values.get("documents") or ())
        entries[batch_id] = replace(entry, collected=done)
