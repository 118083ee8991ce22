"""Dagster storage tuned for a pipeline that writes several events per document.

`PooledPostgresEventLogStorage` is dagster-postgres' event-log storage with cheaper writes:

- **A pool** (as the project's run and schedule storage, `instance/pooled_storage.py`). The stock
  storage uses `NullPool`: every event write opens a new PostgreSQL connection (a new server
  backend, ~10 ms). Reads keep a small pool tested on checkout.
- **One transaction per write.** The stock `store_event` takes two connections and three commits
  per asset event (the row, a `NOTIFY` nobody listens to since Dagster polls, then the asset's
  summary row); here the row, its indexed tags and the summary row go in one transaction on a
  connection of a second, unpinged pool (a write that meets a dropped connection is retried).
- **Batches in one statement.** Dagster hands a run's planned events (2 per document when a
  sensor or backfill creates a run) to `store_event_batch` when `DAGSTER_EVENT_BATCH_SIZE` is set;
  dagster-postgres writes planned events one by one even then. Here a batch of asset events is one
  multi-row INSERT plus one summary update per asset and event type. Loading this storage sets
  `DAGSTER_EVENT_BATCH_SIZE` (unless set) so Dagster sends such batches.
- **Retryability indexed.** A failure observation's `extraction_pipeline/retryable` tag goes into
  `asset_event_tags` with the tags Dagster indexes itself, so the retry schedule reads it per
  document with one query instead of decoding each failure's event (~0.3 ms each: 20,000 failed
  documents took most of a 3 s tick). It is the one difference from the stock storage's rows.
- **The latest event of every document partition, over the live ones.** Dagster's staleness
  check of one partition (the UI's partition page, `AssetPartitionStaleQuery`) asks for the
  latest event of every partition the asset ever had, for the asset and its parent: with
  archiving, a year's million documents for a page about one of a few thousand live ones (4.2 s
  at 1,000,000). For the document assets that question is answered over the live partitions
  (a thousand per indexed query) while there are at most LIVE_LIMIT of them: archived ones are
  not in the partitions definition, so nothing Dagster shows or runs can use them; an archived
  document dropped again is live again, its history with it.
- Tables and columns that exist are remembered (the stock `has_table` asks the catalog on every
  tagged asset event and every dynamic-partition check, `has_asset_key_col` on asset reads).

What ends up in the tables is what the stock storage writes (`extraction_pipeline_tests/instance/
test_event_log.py` compares them), but that tag's rows. dagster.yaml names this class; set `class:
PostgresEventLogStorage` (module `dagster_postgres`) there to get the stock behaviour back.
"""

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy
import sqlalchemy.exc
from dagster import AssetKey, DagsterEventType, EventLogEntry
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import (
    DagsterPostgresException,
)

from extraction_pipeline.instance.dagster_compat import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    SqlEventLogStorageTable,
)
from extraction_pipeline.instance.event_columns import latest_ids_by_partition
from extraction_pipeline.instance.names import (
    DOCUMENT_KEYS,
    DOCUMENTS_PARTITIONS_NAME,
    RETRYABLE_TAG,
)
from extraction_pipeline.instance.pooled_storage import PooledStorage, pooled_engine

# How long an event write waits for the database to come back (a restart, a failover).
RECONNECT_SECONDS = 120.0
# Events Dagster buffers before it hands them to `store_event_batch` (a run's planned events:
# 2 per document, so one batch for a run of up to 1,000 documents, EXTRACTION_DOCUMENTS_PER_RUN).
EVENT_BATCH_SIZE = "2000"
# Up to this many live documents, what Dagster asks of every partition ever seen is answered
# over the live ones, a thousand per query (here, and the stored status in partition_status.py);
# above it the one pass over the history is the cheaper.
LIVE_LIMIT = 100_000

log = logging.getLogger(__name__)
T = TypeVar("T")


class PooledPostgresEventLogStorage(PooledStorage, PostgresEventLogStorage):
    TABLES = "event_log"
    POOL_SIZE = 2

    def _set_up_pools(self) -> None:
        super()._set_up_pools()
        # Writes: transactions, no ping (a write on a dropped connection fails, the pool drops
        # its connections, and `_while_database_returns` writes again on a new one).
        self._write_engine = pooled_engine(
            self.postgres_url, self._token_provider, pool_size=1, autocommit=False, ping=False
        )
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)

    def store_event(self, event: EventLogEntry) -> None:
        self._write([event])

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        # dagster-postgres drops failed-to-materialise events from batches; so does this.
        kept = [e for e in events if not e.get_dagster_event().is_asset_failed_to_materialize]
        if all(_event_type(event) in ASSET_EVENTS for event in kept):
            if kept:
                self._write(kept)
        else:  # other events in the batch (Dagster batches asset check plans too): one by one
            for event in kept:
                self.store_event(event)

    def get_latest_storage_id_by_partition(
        self,
        asset_key: AssetKey,
        event_type: DagsterEventType,
        partitions: set[str] | None = None,
        after_cursor: int | None = None,
    ) -> Mapping[str, int]:
        live = None if partitions or asset_key not in DOCUMENT_KEYS else live_documents(self)
        if live is None:
            return super().get_latest_storage_id_by_partition(
                asset_key, event_type, partitions, after_cursor
            )
        # Asked with partitions, each chunk is the stock query.
        return latest_ids_by_partition(self, asset_key, event_type, live, after_cursor)

    def get_asset_tags_to_index(self, tag_keys: set[str]) -> set[str]:
        return super().get_asset_tags_to_index(tag_keys) | (tag_keys & {RETRYABLE_TAG})

    # The stock storage asks the catalog for these on every tagged asset event, every dynamic
    # partition check and every asset read (the status cache's column).
    def has_table(self, table_name: str) -> bool:
        return self._schema_has(
            f"table {table_name}", functools.partial(super().has_table, table_name)
        )

    def has_asset_key_col(self, column_name: str) -> bool:
        return self._schema_has(
            f"asset_keys.{column_name}", functools.partial(super().has_asset_key_col, column_name)
        )

    def _has_asset_key_col_on_connection(
        self, conn: sqlalchemy.Connection, column_name: str
    ) -> bool:
        return self._schema_has(
            f"asset_keys.{column_name}",
            functools.partial(super()._has_asset_key_col_on_connection, conn, column_name),
        )

    def dispose(self) -> None:
        super().dispose()
        self._write_engine.dispose()

    def _write(self, events: Sequence[EventLogEntry]) -> None:
        """The events' rows, their indexed tags and their assets' summary rows in one
        transaction (written again whole if the database was away); then asset check events,
        as dagster-postgres does."""
        ids = _while_database_returns(functools.partial(self._insert, events))
        for event, event_id in zip(events, ids, strict=True):
            if _event_type(event) in ASSET_CHECK_EVENTS:
                _while_database_returns(
                    functools.partial(self.store_asset_check_event, event, event_id)
                )

    def _insert(self, events: Sequence[EventLogEntry]) -> list[int]:
        statement = (
            self.prepare_insert_event(events[0])
            if len(events) == 1
            else self.prepare_insert_event_batch(events)
        )
        with self._write_engine.begin() as conn:
            result = conn.execute(statement.returning(SqlEventLogStorageTable.c.id))
            ids = [int(row[0]) for row in result.fetchall()]
            asset_events = [
                (event, event_id)
                for event, event_id in zip(events, ids, strict=True)
                if _event_type(event) in ASSET_EVENTS and event.get_dagster_event().asset_key
            ]
            if asset_events:
                self._store_asset_event_tags(
                    conn, [event for event, _ in asset_events], [i for _, i in asset_events]
                )
                for event, event_id in _last_per_asset_and_type(asset_events):
                    self._store_asset_event(conn, event, event_id)
        return ids


def live_documents(storage: PostgresEventLogStorage) -> list[str] | None:
    """The live `documents` partitions in Dagster's order, or None when there are more than
    LIVE_LIMIT (read no further than that)."""
    page = storage.get_paginated_dynamic_partitions(
        DOCUMENTS_PARTITIONS_NAME, limit=LIVE_LIMIT, ascending=True
    )
    return None if page.has_more else list(page.results)


def _event_type(event: EventLogEntry) -> Any:
    return event.dagster_event.event_type if event.dagster_event is not None else None


def _last_per_asset_and_type(
    asset_events: list[tuple[EventLogEntry, int]],
) -> list[tuple[EventLogEntry, int]]:
    """The events whose summary updates leave the asset's row as updating it after every event
    would: each event type sets its own columns, so the last of each type, in log order."""
    last: dict[tuple[Any, Any], tuple[EventLogEntry, int]] = {}
    for event, event_id in asset_events:
        last[(event.get_dagster_event().asset_key, _event_type(event))] = (event, event_id)
    return sorted(last.values(), key=lambda pair: pair[1])


def _while_database_returns(write: Callable[[], T]) -> T:
    """Write; if the server cannot be reached (restarting, failing over), try again for up to
    RECONNECT_SECONDS instead of failing the step that wrote the event. dagster-postgres' own
    connection retries give up after a few seconds."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    delay = 0.5
    while True:
        try:
            return write()
        except (sqlalchemy.exc.OperationalError, DagsterPostgresException) as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "event log write failed (%s); retrying in %.1f s", type(error).__name__, delay
            )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
