"""Columns of Dagster's event-log rows, read without decoding the events.

Decoding a stored event (Dagster's serdes over its JSON) costs 0.05-0.3 ms; a retry tick over
20,000 failed documents decoded each one's planned events and latest failure. What it needs is
in plain columns of `event_logs` (partition, run id) and in the indexed tags of
`asset_event_tags`, read here one indexed query per thousand keys.
"""

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import dagster as dg
import sqlalchemy as sa

from extraction_pipeline.instance.dagster_compat import AssetEventTagsTable, SqlEventLogStorageTable

CHUNK = 1000
EVENTS = SqlEventLogStorageTable
TAGS = AssetEventTagsTable


class EventRow(NamedTuple):
    storage_id: int
    partition: str
    run_id: str
    tag: str | None  # the value of the tag asked for, None when the event has none indexed


def planned_runs(
    instance: dg.DagsterInstance, asset: dg.AssetKey, keys: Sequence[str]
) -> dict[str, list[str]]:
    """For each of `keys`: the runs that planned `asset` for it, newest first ([] for none)."""
    runs: dict[str, list[str]] = {key: [] for key in keys}
    for chunk in _chunks(keys):
        query = (
            sa.select(EVENTS.c.partition, EVENTS.c.run_id)
            .where(
                EVENTS.c.asset_key == asset.to_string(),
                EVENTS.c.dagster_event_type
                == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
                EVENTS.c.partition.in_(chunk),
            )
            .order_by(EVENTS.c.id.desc())
        )
        for partition, run_id in _rows(instance, query):
            runs[partition].append(run_id)
    return runs


def event_rows(
    instance: dg.DagsterInstance, storage_ids: Mapping[str, int], tag: str
) -> dict[str, EventRow]:
    """The rows of the events `storage_ids` names (partition -> storage id), each with the value
    of its indexed `tag`."""
    rows: dict[str, EventRow] = {}
    ids = list(storage_ids.values())
    for chunk in _chunks(ids):
        joined = EVENTS.outerjoin(TAGS, sa.and_(TAGS.c.event_id == EVENTS.c.id, TAGS.c.key == tag))
        query = (
            sa.select(EVENTS.c.id, EVENTS.c.partition, EVENTS.c.run_id, TAGS.c.value)
            .select_from(joined)
            .where(EVENTS.c.id.in_(chunk))
        )
        for storage_id, partition, run_id, value in _rows(instance, query):
            rows[partition] = EventRow(storage_id, partition, run_id, value)
    return rows


def latest_ids_by_partition(
    storage: Any,
    asset: dg.AssetKey,
    event_type: dg.DagsterEventType,
    keys: Sequence[str],
    after_cursor: int | None = None,
) -> dict[str, int]:
    """The storage id of the latest `event_type` event of `asset` for each of `keys` that has
    one (after `after_cursor`): `storage`'s own `get_latest_storage_id_by_partition`, asked a
    thousand keys at a time, so the cost follows `keys`, not the history."""
    latest: dict[str, int] = {}
    for chunk in _chunks(keys):
        latest.update(
            storage.get_latest_storage_id_by_partition(
                asset, event_type, partitions=set(chunk), after_cursor=after_cursor
            )
        )
    return latest


def _chunks(items: Sequence[Any]) -> list[list[Any]]:
    return [list(items[start : start + CHUNK]) for start in range(0, len(items), CHUNK)]


def _rows(instance: dg.DagsterInstance, query: Any) -> list[Any]:
    with instance.event_log_storage.index_connection() as conn:  # type: ignore[attr-defined]
        return conn.execute(query).fetchall()
