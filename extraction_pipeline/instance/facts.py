"""Reading `DocumentFacts` out of Dagster's run and event-log storage (Postgres)."""

from collections.abc import Collection, Sequence

import dagster as dg

from extraction_pipeline.core.operations.lifecycle import (
    AssetState,
    DocumentFacts,
    intake_candidates,
)
from extraction_pipeline.instance.batches import documents_in_open_batches
from extraction_pipeline.instance.document_runs import run_document_keys
from extraction_pipeline.instance.names import (
    DOCUMENTS_PARTITIONS_NAME,
    EXTRACTION_KEY,
    SOURCE_KEY,
    documents_partitions,
)
from extraction_pipeline.instance.outcomes import read_outcome

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
    facts = []
    for key in keys:
        attempts, retryable = 0, None
        if extraction[key] is AssetState.FAILED:
            attempts, retryable = extraction_attempts(instance, key)
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


def extraction_attempts(instance: dg.DagsterInstance, key: str) -> tuple[int, bool | None]:
    """How many runs planned an extraction of `key`, and whether its latest failure is worth
    retrying (None when the latest run recorded no outcome, e.g. its worker died)."""
    planned = instance.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            asset_key=EXTRACTION_KEY,
            asset_partitions=[key],
        ),
        limit=1000,
    )
    if not planned:
        return 0, None
    latest_run = planned[0].run_id
    observations = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=EXTRACTION_KEY, asset_partitions=[key]), limit=1
    ).records
    latest = read_outcome(observations[0]) if observations else None
    if latest is None or latest.run_id != latest_run:
        return len(planned), None
    return len(planned), latest.retryable


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
    extracted = instance.get_materialized_partitions(EXTRACTION_KEY)
    unextracted = [k for k in ordered_keys if k not in busy and k not in extracted]
    attempted = attempted_documents(instance, unextracted)
    return intake_candidates(ordered_keys, busy, extracted, attempted)


def attempted_documents(
    instance: dg.DagsterInstance,
    keys: Sequence[str],
    assets: Sequence[dg.AssetKey] = (SOURCE_KEY, EXTRACTION_KEY),
) -> set[str]:
    """The documents among `keys` that some run planned (for any of `assets`): one indexed query
    per thousand keys and asset, instead of decoding the status of every partition."""
    attempted: set[str] = set()
    for start in range(0, len(keys), 1000):
        chunk = list(keys[start : start + 1000])
        for asset in assets:
            records = instance.get_event_records(
                dg.EventRecordsFilter(
                    event_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                    asset_key=asset,
                    asset_partitions=chunk,
                )
            )
            attempted.update(r.partition_key for r in records if r.partition_key is not None)
    return attempted
