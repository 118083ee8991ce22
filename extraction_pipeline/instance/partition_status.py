"""Dagster's stored partition status of the document assets, kept valid for the live set.

Dagster stores per partitioned asset which partitions are materialised, failed and in progress
(the UI's asset page, partition bars and counts read it), stamped with a hash of the partition
keys it was computed for. When the `documents` partitions change (the inbox sensor adds,
archiving removes), the stamp stops matching and the next reader, usually the UI, rebuilds the
status from the asset's whole history: 47 s per asset with 1,000,000 documents in the event log
although archiving left 20,000 live, and again after every new file (benchmarks/README.md).

Where archiving keeps the live set bounded, the code that changes the set stores the status for
it right after (`refresh_partition_status`). A status stored for the set before the change is
carried over: removed keys dropped, added ones looked up (a document dropped again after it was
archived brings its history back). Otherwise it is built over the live keys, at most
LIVE_LIMIT of them. Either way by Dagster's rules (materialised: has a materialisation; failed or
in progress: its latest planned event has no materialisation after it and that run failed or has
not finished), asked one indexed query per thousand keys. Readers then find the stamp matching
and only add what came since.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from extraction_pipeline.instance.dagster_compat import (
    AssetStatusCacheValue,
    last_planned_storage_id,
    partition_keys_stamp,
)
from extraction_pipeline.instance.event_log import LIVE_LIMIT, live_documents
from extraction_pipeline.instance.facts import MATERIALIZED, PLANNED, latest_storage_ids
from extraction_pipeline.instance.names import (
    DOCUMENT_KEYS,
    documents_partitions,
)

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
RUNS_PER_QUERY = 100


def live_keys_within_limit(instance: dg.DagsterInstance) -> list[str] | None:
    """The live documents, or None above LIVE_LIMIT: beyond it the status is left to Dagster's
    readers (building it takes two indexed queries per thousand keys, ~5 ms each, and a look at
    the unfinished ones' runs, paid by a sensor tick; carrying a stored one over reads only the
    added keys)."""
    return live_documents(instance.event_log_storage)  # type: ignore[arg-type]


def refresh_partition_status(
    instance: dg.DagsterInstance, keys: Sequence[str], before: Sequence[str] | None = None
) -> list[str]:
    """Store the status of each document asset for `keys` (the live partitions, in Dagster's
    order) unless the stored one is stamped for them already. `before`: the partitions before
    the change that made `keys`, whose stored status can be carried over. Returns the names of
    the assets whose status was stored."""
    stamp = partition_keys_stamp(list(keys))
    before_stamp = partition_keys_stamp(list(before)) if before is not None else None
    stored = []
    for record in instance.get_asset_records(list(DOCUMENT_KEYS)):
        entry = record.asset_entry
        old = entry.cached_status
        if old is not None and old.partitions_def_id == stamp:
            continue
        if old is not None and before is not None and old.partitions_def_id == before_stamp:
            status = _carried_over(instance, entry.asset_key, old, before, keys).value(stamp)
        elif len(keys) <= LIVE_LIMIT:
            # Read before the events: a reader adds what is newer than this, and adding a
            # materialisation or failure seen twice changes nothing.
            latest = max(
                entry.last_materialization_storage_id or 0,
                last_planned_storage_id(instance, entry.asset_key, record),
            )
            if not latest:
                continue
            status = _Status.of(instance, entry.asset_key, keys, latest).value(stamp)
        else:
            continue
        instance.update_asset_cached_status_data(entry.asset_key, status)
        stored.append(entry.asset_key.to_user_string())
    return stored


@dataclass(frozen=True)
class _Status:
    latest_storage_id: int
    materialized: frozenset[str]
    failed: frozenset[str]
    in_progress: frozenset[str]
    earliest_in_progress: int | None

    @classmethod
    def of(
        cls, instance: dg.DagsterInstance, asset: dg.AssetKey, keys: Sequence[str], latest: int
    ) -> "_Status":
        materialized = latest_storage_ids(instance, asset, MATERIALIZED, keys)
        planned = latest_storage_ids(instance, asset, PLANNED, keys)
        unfinished = {k: id_ for k, id_ in planned.items() if id_ > materialized.get(k, 0)}
        statuses = _run_statuses(instance, unfinished)
        in_progress = frozenset(k for k, status in statuses.items() if status not in FINISHED)
        return cls(
            latest_storage_id=latest,
            materialized=frozenset(materialized),
            failed=frozenset(k for k, s in statuses.items() if s is dg.DagsterRunStatus.FAILURE),
            in_progress=in_progress,
            earliest_in_progress=min((unfinished[k] for k in in_progress), default=None),
        )

    @classmethod
    def read(cls, value: AssetStatusCacheValue) -> "_Status":
        partitions = documents_partitions
        materialized = value.deserialize_materialized_partition_subsets(partitions)
        failed = value.deserialize_failed_partition_subsets(partitions)
        in_progress = value.deserialize_in_progress_partition_subsets(partitions)
        return cls(
            latest_storage_id=value.latest_storage_id,
            materialized=frozenset(materialized.get_partition_keys()),
            failed=frozenset(failed.get_partition_keys()),
            in_progress=frozenset(in_progress.get_partition_keys()),
            earliest_in_progress=value.earliest_in_progress_materialization_event_id,
        )

    def value(self, stamp: str) -> AssetStatusCacheValue:
        def serialized(keys: Collection[str]) -> str:
            return documents_partitions.empty_subset().with_partition_keys(keys).serialize()

        return AssetStatusCacheValue(
            latest_storage_id=self.latest_storage_id,
            partitions_def_id=stamp,
            serialized_materialized_partition_subset=serialized(self.materialized),
            serialized_failed_partition_subset=serialized(self.failed),
            serialized_in_progress_partition_subset=serialized(self.in_progress),
            earliest_in_progress_materialization_event_id=self.earliest_in_progress,
        )


def _carried_over(
    instance: dg.DagsterInstance,
    asset: dg.AssetKey,
    old: AssetStatusCacheValue,
    before: Sequence[str],
    keys: Sequence[str],
) -> _Status:
    """`old`, stored for `before`, brought to `keys`: the removed keys dropped, the added ones
    looked up. It keeps its storage id: what a reader adds after it, it may hold already."""
    was, now = set(before), set(keys)
    kept = _Status.read(old)
    added = _Status.of(instance, asset, [k for k in keys if k not in was], old.latest_storage_id)
    gone = was - now
    starts = [s for s in (kept.earliest_in_progress, added.earliest_in_progress) if s]
    return _Status(
        latest_storage_id=old.latest_storage_id,
        materialized=(kept.materialized - gone) | added.materialized,
        failed=(kept.failed - gone) | added.failed,
        in_progress=(kept.in_progress - gone) | added.in_progress,
        earliest_in_progress=min(starts, default=None),
    )


def _run_statuses(
    instance: dg.DagsterInstance, planned: Mapping[str, int]
) -> dict[str, dg.DagsterRunStatus]:
    """The status of the run behind each planned event (by partition); partitions whose run was
    deleted are left out, as Dagster leaves them out of both failed and in progress."""
    ids = list(planned.values())
    run_of: dict[str, str] = {}
    for start in range(0, len(ids), 1000):
        records = instance.get_event_records(
            dg.EventRecordsFilter(event_type=PLANNED, storage_ids=ids[start : start + 1000])
        )
        run_of.update({r.partition_key: r.run_id for r in records if r.partition_key})
    run_ids = sorted(set(run_of.values()))
    status: dict[str, dg.DagsterRunStatus] = {}
    for start in range(0, len(run_ids), RUNS_PER_QUERY):
        chunk = run_ids[start : start + RUNS_PER_QUERY]
        status.update({r.run_id: r.status for r in instance.get_runs(dg.RunsFilter(run_ids=chunk))})
    return {key: status[run] for key, run in run_of.items() if run in status}
