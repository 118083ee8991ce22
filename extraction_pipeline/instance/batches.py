"""Batches handed to the provider's Batch API, as Dagster's event log records them.

Each batch is a `model_batches` observation when submitted (its id, documents, attempt) and
another when it ended (its final status and counts). Which batches are open, and which
documents wait in one, is read back here, by the sensor that polls them, the schedules (a
document in an open batch is busy), `status` and the `batch` commands. Nothing about a batch
lives outside the event log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg

from extraction_pipeline.core.extraction.batch import BatchState
from extraction_pipeline.instance.names import MODEL_BATCHES_KEY

SUBMITTED, ENDED = "submitted", "ended"
PAGE = 1000


@dataclass(frozen=True)
class BatchEntry:
    """One batch: what was submitted, and (once it ended) how it ended."""

    batch_id: str
    documents: tuple[str, ...]
    attempt: int
    submitted_at: float
    run_id: str
    status: str = SUBMITTED  # the provider's final status once ended
    ended_at: float | None = None
    completed: int = 0
    failed: int = 0

    @property
    def is_open(self) -> bool:
        return self.ended_at is None

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "documents": len(self.documents),
            "attempt": self.attempt,
            "submitted_at": self.submitted_at,
            "run_id": self.run_id,
            "status": self.status if not self.is_open else "open",
            "ended_at": self.ended_at,
            "completed": self.completed,
            "failed": self.failed,
        }


def submitted_event(batch_id: str, documents: Sequence[str], attempt: int) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=MODEL_BATCHES_KEY,
        metadata={
            "event": SUBMITTED,
            "batch_id": batch_id,
            "attempt": attempt,
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
    """Document key -> the open batch it waits in."""
    return {key: entry.batch_id for entry in open_batches(instance) for key in entry.documents}


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
        )
    elif values.get("event") == ENDED and batch_id in entries:
        entries[batch_id] = replace(
            entries[batch_id],
            status=str(values.get("status") or "ended"),
            ended_at=record.timestamp,
            completed=int(values.get("completed") or 0),
            failed=int(values.get("failed") or 0),
        )
