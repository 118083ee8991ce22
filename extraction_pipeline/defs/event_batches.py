"""The document step's events, written to the event log a batch at a time.

A run records two events per document (its source and its extraction). Written one by one, that
is a database transaction per event and most of a run's CPU; written in batches it is one
multi-row INSERT per asset and event type. Batches are formed as the work goes: events wait at
most `MAX_WAIT_SECONDS` (or until `MAX_EVENTS` are waiting) while documents are read, and the
step flushes before it waits for the model and before it reads the event log itself. A run that
dies loses at most its unflushed events: their outcomes are in the record store, so the run's
retry records them again without paying for them.

Dagster writes a batch in one `store_event_batch` call when `DAGSTER_EVENT_BATCH_SIZE` is set
(the project's event-log storage sets it); without it the same events are written one by one.
"""

import time
from collections.abc import Iterable, Iterator

import dagster as dg

from extraction_pipeline.instance.dagster_compat import batched_step_events
from extraction_pipeline.instance.names import SOURCE_KEY

MAX_EVENTS = 200
MAX_WAIT_SECONDS = 0.25

AssetEvent = dg.AssetMaterialization | dg.AssetObservation


class EventBatches:
    """Collects the step's asset events; `flush` yields them as Dagster events to be yielded by
    the step, one batch per asset and event type (dagster-postgres' own batch write updates only
    the last event's asset, so the stock storage stays correct too), sources first so a
    document's source event always precedes its extraction event."""

    def __init__(self, context: dg.AssetExecutionContext) -> None:
        self._context = context
        self._waiting: list[AssetEvent] = []
        self._since = 0.0

    def add(self, events: Iterable[AssetEvent]) -> None:
        for event in events:
            if not self._waiting:
                self._since = time.monotonic()
            self._waiting.append(event)

    def flush_if_due(self) -> Iterator[dg.DagsterEvent]:
        if len(self._waiting) >= MAX_EVENTS or (
            self._waiting and time.monotonic() - self._since >= MAX_WAIT_SECONDS
        ):
            yield from self.flush()

    def flush(self) -> Iterator[dg.DagsterEvent]:
        groups: dict[tuple[bool, dg.AssetKey, type], list[AssetEvent]] = {}
        for event in self._waiting:
            key = (event.asset_key != SOURCE_KEY, event.asset_key, type(event))
            groups.setdefault(key, []).append(event)
        self._waiting = []
        step = self._context.get_step_execution_context()
        for _, group in sorted(groups.items(), key=lambda item: item[0][0]):
            yield from batched_step_events(step, group)
