"""Reading `DocumentFacts` out of Dagster's run and event-log storage (Postgres)."""

import warnings
from collections.abc import Collection, Sequence

import dagster as dg

from extraction_pipeline.core.operations.lifecycle import (
    AssetState,
    DocumentFacts,
    intake_candidates,
)
from extraction_pipeline.instance.batches import documents_in_open_batches
from extraction_pipeline.instance.document_runs import run_document_keys
from extraction_pipeline.instance.event_columns import (
    event_rows,
    latest_ids_by_partition,
    planned_runs,
)
from extraction_pipeline.instance.names import (
    DOCUMENTS_PARTITIONS_NAME,
    EXTRACTION_KEY,
    RETRYABLE_TAG,
    SOURCE_KEY,
    documents_partitions,
)
from extraction_pipeline.instance.outcomes import (
    RecordedOutcome,
    read_outcome,
    retryable_from_tag,
)

# Dagster warns on every query of planned events by partition that events planned for a whole
# partition subset are not returned. Runs here plan each document's partition on its own (one
# planned event per document and asset), so the warning says nothing about them; it would fill
# the daemon's log on every tick. (A process-wide filter: catch_warnings is not thread-safe.)
warnings.filterwarnings(
    "ignore", message="Asset materialization planned events with partitions subsets"
)

_STATES = {
    dg.AssetPartitionStatus.MATERIALIZED: AssetState.MATERIALIZED,
    dg.AssetPartitionStatus.FAILED: AssetState.FAILED,
    dg.AssetPartitionStatus.IN_PROGRESS: AssetState.IN_PROGRESS,
}
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
WAITING = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED}


def all_document_keys(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))


def document_facts(
    instance: dg.DagsterInstance,
    keys: Sequence[str],
    review_keys: Collection[str] = (),
    ordered_keys: Sequence[str] | None = None,
) -> list[DocumentFacts]:
    """Facts for `keys`. Attempt counts and retryability are read only for failed documents,
    so the cost grows with what failed, not with the corpus."""
    if not keys:
        return []
    source = _states(instance, SOURCE_KEY, keys)
    extraction = _states(instance, EXTRACTION_KEY, keys)
    in_progress = [k for k in keys if AssetState.IN_PROGRESS in (source[k], extraction[k])]
    queued = (
        waiting_documents(instance, ordered_keys or all_document_keys(instance))
        if in_progress
        else set()
    )
    in_batch = documents_in_open_batches(instance)
    failed = [key for key in keys if extraction[key] is AssetState.FAILED]
    tried = extraction_attempts_of(instance, failed)
    facts = []
    for key in keys:
        attempts, retryable = tried.get(key, (0, None))
        facts.append(
            DocumentFacts(
                document_key=key,
                source=source[key],
                extraction=extraction[key],
                attempts=attempts,
                last_error_retryable=retryable,
                needs_review=key in review_keys,
                queued=key in queued,
                in_batch=key in in_batch,
            )
        )
    return facts


def _states(
    instance: dg.DagsterInstance, asset: dg.AssetKey, keys: Sequence[str]
) -> dict[str, AssetState]:
    statuses = instance.get_status_by_partition(asset, keys, documents_partitions) or {}
    return {key: _STATES.get(statuses.get(key), AssetState.MISSING) for key in keys}  # type: ignore[arg-type]


def extraction_attempts_of(
    instance: dg.DagsterInstance, keys: Sequence[str], retryability_below: int | None = None
) -> dict[str, tuple[int, bool | None]]:
    """For each of `keys`: how many runs planned its extraction, and whether its latest failure
    is worth retrying (None when the latest run recorded no outcome, e.g. its worker died).
    The retry schedule asks this of every failed document: it reads columns and the indexed
    retryable tag (`event_columns`), and decodes a failure's event only where the tag is
    missing (recorded before the tag existed, or by a storage that does not index it).

    With `retryability_below`, retryability is read only for documents with fewer attempts than
    that (None for the others): a document that used up its attempts is a dead letter whatever
    its last failure said."""
    runs = planned_runs(instance, EXTRACTION_KEY, keys)
    limit = retryability_below if retryability_below is not None else float("inf")
    wanted = [key for key, planned in runs.items() if 0 < len(planned) < limit]
    latest = event_rows(
        instance, latest_storage_ids(instance, EXTRACTION_KEY, OBSERVED, wanted), RETRYABLE_TAG
    )
    # Only an outcome of the latest run says anything about the next attempt.
    current = {k: row for k, row in latest.items() if row.run_id == runs[k][0]}
    untagged = _outcomes(instance, [row.storage_id for row in current.values() if row.tag is None])
    attempts: dict[str, tuple[int, bool | None]] = {}
    for key in keys:
        row = current.get(key)
        if row is None:
            retryable = None
        elif row.tag is not None:
            retryable = retryable_from_tag(row.tag)
        else:
            outcome = untagged.get(key)
            retryable = outcome.retryable if outcome else None
        attempts[key] = (len(runs[key]), retryable)
    return attempts


def _outcomes(instance: dg.DagsterInstance, storage_ids: list[int]) -> dict[str, RecordedOutcome]:
    """The outcomes the events `storage_ids` record, by document (decoded)."""
    if not storage_ids:
        return {}
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=OBSERVED, storage_ids=storage_ids)
    )
    return {o.document_key: o for o in map(read_outcome, records) if o is not None}


PLANNED = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
OBSERVED = dg.DagsterEventType.ASSET_OBSERVATION
MATERIALIZED = dg.DagsterEventType.ASSET_MATERIALIZATION
# 1,000 keys per query take ~5 ms; one pass over 1,000,000 materialised partitions ~3 s.
HISTORY_PASS_ABOVE = 500_000


def waiting_documents(instance: dg.DagsterInstance, ordered_keys: Sequence[str]) -> set[str]:
    runs = instance.get_runs(dg.RunsFilter(statuses=list(WAITING)))
    return {key for run in runs for key in run_document_keys(run, ordered_keys)}


def busy_documents(instance: dg.DagsterInstance, ordered_keys: Sequence[str]) -> set[str]:
    """Documents of every run not finished yet, queued ones included, and of every batch the
    provider has not finished answering."""
    runs = instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))
    busy = {key for run in runs for key in run_document_keys(run, ordered_keys)}
    return busy | set(documents_in_open_batches(instance))


def never_attempted(instance: dg.DagsterInstance, ordered_keys: Sequence[str]) -> list[str]:
    """Documents no run ever planned, none is under way for, and not extracted: what the
    nightly intake (and `batch submit --pending`) takes."""
    busy = busy_documents(instance, ordered_keys)
    extracted = extracted_documents(instance, ordered_keys)
    unextracted = [k for k in ordered_keys if k not in busy and k not in extracted]
    attempted = attempted_documents(instance, unextracted)
    return intake_candidates(ordered_keys, busy, extracted, attempted)


def extracted_documents(instance: dg.DagsterInstance, keys: Sequence[str]) -> set[str]:
    """The documents among `keys` (the live ones) with an `extraction` materialisation, asked a
    thousand keys at a time: Dagster's `get_materialized_partitions` reads every partition ever
    materialised instead, a year's million documents on every tick although archiving left a few
    thousand live. Above HISTORY_PASS_ABOVE live keys that one pass is the cheaper of the two."""
    if len(keys) > HISTORY_PASS_ABOVE:
        return set(keys) & instance.get_materialized_partitions(EXTRACTION_KEY)
    return _having_event(instance, EXTRACTION_KEY, MATERIALIZED, keys)


def attempted_documents(
    instance: dg.DagsterInstance,
    keys: Sequence[str],
    assets: Sequence[dg.AssetKey] = (SOURCE_KEY, EXTRACTION_KEY),
) -> set[str]:
    """The documents among `keys` that some run planned (for any of `assets`)."""
    attempted: set[str] = set()
    for asset in assets:
        attempted |= _having_event(instance, asset, PLANNED, keys)
    return attempted


def _having_event(
    instance: dg.DagsterInstance,
    asset: dg.AssetKey,
    event_type: dg.DagsterEventType,
    keys: Sequence[str],
) -> set[str]:
    return set(latest_storage_ids(instance, asset, event_type, keys))


def latest_storage_ids(
    instance: dg.DagsterInstance,
    asset: dg.AssetKey,
    event_type: dg.DagsterEventType,
    keys: Sequence[str],
) -> dict[str, int]:
    """The storage id of the latest `event_type` event of `asset` for each of `keys` that has
    one: one indexed query per thousand keys reading only partitions and storage ids (decoding
    the events cost 0.15 s per thousand keys), so the cost follows `keys`, not the history."""
    return latest_ids_by_partition(instance.event_log_storage, asset, event_type, keys)
