"""The project's event-log storage writes exactly the rows dagster-postgres' own storage writes,
one event at a time and in batches, and Dagster hands it a run's planned events as one batch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg2
import pytest
import sqlalchemy
from dagster._core.events import (
    AssetMaterializationPlannedData,
    DagsterEventType,
    StepMaterializationData,
)
from dagster._core.storage.event_log.base import EventLogStorage
from dagster_postgres import PostgresEventLogStorage

from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.event_log import PooledPostgresEventLogStorage
from extraction_pipeline.instance.postgres import drop_database, ensure_database, libpq_dsn
from extraction_pipeline_tests.defs.helpers import definitions_for
from extraction_pipeline_tests.pdfs import good_pdf

TABLES = {
    "event_logs": "id, run_id, event, dagster_event_type, timestamp, step_key, asset_key, "
    "partition",
    "asset_keys": "asset_key, last_materialization, last_run_id, last_materialization_timestamp",
    "asset_event_tags": "event_id, asset_key, key, value, event_timestamp",
}
COUNT = 12
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
RUN = "6a0c6b0e-0000-4000-8000-000000000001"


def _event(
    event_type: DagsterEventType, data: object, asset: str, at: float, run_id: str = RUN
) -> dg.EventLogEntry:
    dagster_event = dg.DagsterEvent(
        event_type_value=event_type.value,
        job_name="intake_job",
        event_specific_data=data,  # type: ignore[arg-type]
        step_key="document_assets",
    )
    return dg.EventLogEntry(
        error_info=None,
        level=10,
        user_message="",
        run_id=run_id,
        timestamp=at,
        step_key="document_assets",
        job_name="intake_job",
        dagster_event=dagster_event,
    )


def _planned(asset: str, partition: str, at: float) -> dg.EventLogEntry:
    data = AssetMaterializationPlannedData(dg.AssetKey(asset), partition=partition)
    return _event(DagsterEventType.ASSET_MATERIALIZATION_PLANNED, data, asset, at)


def _materialized(asset: str, partition: str, at: float, **tags: str) -> dg.EventLogEntry:
    materialization = dg.AssetMaterialization(
        asset, partition=partition, metadata={"n": len(partition)}, tags=tags or None
    )
    data = StepMaterializationData(materialization)
    return _event(DagsterEventType.ASSET_MATERIALIZATION, data, asset, at)


def _observed(asset: str, partition: str, at: float) -> dg.EventLogEntry:
    observation = dg.AssetObservation(asset, partition=partition, metadata={"error": "x"})
    return _event(
        DagsterEventType.ASSET_OBSERVATION,
        _observation_data(observation),
        asset,
        at,
    )


def _observation_data(observation: dg.AssetObservation) -> object:
    from dagster._core.events import AssetObservationData

    return AssetObservationData(observation)


def _history() -> list[list[dg.EventLogEntry]]:
    """Write calls, in order: a list of one is `store_event`, longer ones `store_event_batch`."""
    keys = [f"doc{i}" for i in range(5)]
    at = 1_700_000_000.0
    planned = [_planned(asset, k, at) for asset in ("source_document", "extraction") for k in keys]
    calls: list[list[dg.EventLogEntry]] = [planned]
    for i, key in enumerate(keys):
        calls.append([_materialized("source_document", key, at + i)])
        if i == 3:
            calls.append([_observed("extraction", key, at + i + 0.5)])
        else:
            tags = {"dagster/data_version": f"v{i}"}
            calls.append([_materialized("extraction", key, at + i + 0.5, **tags)])
    # A batch with two assets and three event types: each asset's summary row must end as if
    # the events were written one by one.
    calls.append(
        [
            _materialized("tables", "", at + 10),
            _planned("extraction", "doc9", at + 11),
            _materialized("extraction", "doc9", at + 12),
            _observed("extraction", "doc9", at + 13),
            _planned("tables", "", at + 14),
        ]
    )
    calls.append([_event(DagsterEventType.RUN_SUCCESS, None, "", at + 20)])
    return calls


def _rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    rows = {}
    with psycopg2.connect(libpq_dsn(url)) as connection, connection.cursor() as cursor:
        for table, columns in TABLES.items():
            cursor.execute(f"SELECT {columns} FROM {table} ORDER BY 1, 2")
            rows[table] = cursor.fetchall()
    return rows


@pytest.fixture
def twin_urls(pg_server_url: str) -> Iterator[tuple[str, str]]:
    names = [f"test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    urls = tuple(ensure_database(pg_server_url, name) for name in names)
    yield urls  # type: ignore[misc]
    for name in names:
        drop_database(pg_server_url, name)


def _write(storage: EventLogStorage, calls: list[list[dg.EventLogEntry]]) -> None:
    for events in calls:
        if len(events) == 1:
            storage.store_event(events[0])
        else:
            storage.store_event_batch(events)


def test_writes_the_rows_dagster_postgres_writes(twin_urls: tuple[str, str]) -> None:
    stock_url, ours_url = twin_urls
    stock = PostgresEventLogStorage(stock_url)
    ours = PooledPostgresEventLogStorage(ours_url)
    calls = _history()
    # dagster-postgres' own batch write keeps only the last event's summary (one asset); its
    # rows for the mixed batch are what writing the events one by one leaves.
    stock_calls = calls[:-2] + [[e] for e in calls[-2]] + calls[-1:]
    try:
        _write(stock, stock_calls)
        _write(ours, calls)
    finally:
        stock.dispose()
        ours.dispose()

    expected, written = _rows(stock_url), _rows(ours_url)
    assert len(written["event_logs"]) == sum(len(events) for events in calls)
    assert {row[0] for row in written["asset_keys"]} == {
        '["source_document"]',
        '["extraction"]',
        '["tables"]',
    }
    assert written == expected


def test_a_ranged_runs_planned_events_are_one_write(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    registry = DocumentRegistry(LocalObjectStore(settings.data_dir))
    keys = sorted(
        registry.register(f"{i}.pdf", good_pdf(i)).record.document_key for i in range(COUNT)
    )
    instance.add_dynamic_partitions("documents", keys)
    storage = instance.event_log_storage
    assert isinstance(storage, PooledPostgresEventLogStorage)
    inserts: list[list[str]] = []  # the event types of each INSERT into event_logs

    def count(conn: object, cursor: object, statement: str, parameters: Any, *_: object) -> None:
        if statement.startswith("INSERT INTO event_logs"):
            types = [v for k, v in parameters.items() if k.startswith("dagster_event_type")]
            inserts.append(types)

    sqlalchemy.event.listen(storage._write_engine, "before_cursor_execute", count)
    result = (
        definitions_for(settings)
        .resolve_job_def("source_job")
        .execute_in_process(
            instance=instance,
            tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
        )
    )

    assert result.success
    planned = instance.get_records_for_run(
        result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    assert sorted(str(r.partition_key) for r in planned) == keys  # one per document, as Dagster's
    materialized = instance.get_records_for_run(
        result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    assert len(materialized) == COUNT
    # The planned events in one statement, the materialisations in batches.
    assert ["ASSET_MATERIALIZATION_PLANNED"] * COUNT in inserts
    batches = [types for types in inserts if "ASSET_MATERIALIZATION" in types]
    assert sum(len(types) for types in batches) == COUNT
    assert len(batches) < COUNT / 2
