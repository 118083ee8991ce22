"""What happened to one document, attempt by attempt, from Dagster's run and event-log storage.

Open-source Dagster does not store failed-materialisation events, so failures are rebuilt from
the runs that planned the document (ASSET_MATERIALIZATION_PLANNED, stored per partition even in
ranged runs), the observations our op records for each failed document, and the runs' step
failures for documents whose run died before it could record anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from extraction_pipeline.instance.names import (
    EXTRACTION_KEY,
    PARENT_RUN_TAG,
    RETRY_NUMBER_TAG,
    SOURCE_KEY,
    TRIGGER_TAG,
)
from extraction_pipeline.instance.outcomes import OUTCOME_EVENT_TYPES, read_outcome

RUN_EVENT_TYPES = {
    *OUTCOME_EVENT_TYPES,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
    dg.DagsterEventType.STEP_FAILURE,
}


@dataclass(frozen=True)
class Attempt:
    """One attempt at one asset of the document: a step attempt inside a run."""

    time: datetime
    run_id: str
    job: str
    run_status: str
    trigger: str  # sensor, schedule, backfill, retry of a run, or manual
    run_retry_number: int
    parent_run_id: str | None
    step_attempt: int  # 1 for the first try of the step in this run, 2 after a step retry...
    asset: str
    outcome: str  # extracted, needs_review, failed, materialized, in_progress, no_outcome
    error_kind: str | None = None
    error: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    cache_hit: bool | None = None
    batch_id: str | None = None  # answered through (or submitted to) this Batch API batch

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = self.time.isoformat()
        return data


def document_history(instance: dg.DagsterInstance, key: str) -> list[Attempt]:
    """Every attempt at `key`, oldest first."""
    attempts: list[Attempt] = []
    for run_id in _planned_runs(instance, key):
        record = instance.get_run_record_by_id(run_id)
        if record is None:
            continue
        attempts.extend(_run_attempts(instance, record, key))
    return sorted(attempts, key=lambda attempt: attempt.time)


def _planned_runs(instance: dg.DagsterInstance, key: str) -> list[str]:
    runs: dict[str, float] = {}
    for asset in (SOURCE_KEY, EXTRACTION_KEY):
        for event in instance.get_event_records(
            dg.EventRecordsFilter(
                event_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                asset_key=asset,
                asset_partitions=[key],
            ),
            limit=10_000,
        ):
            runs.setdefault(event.run_id, event.timestamp)
    return sorted(runs, key=runs.__getitem__)


def _run_attempts(instance: dg.DagsterInstance, record: dg.RunRecord, key: str) -> list[Attempt]:
    run = record.dagster_run
    base: dict[str, Any] = {
        "run_id": run.run_id,
        "job": run.job_name,
        "run_status": run.status.value,
        "trigger": run_trigger(run),
        "run_retry_number": int(run.tags.get(RETRY_NUMBER_TAG, 0)),
        "parent_run_id": run.tags.get(PARENT_RUN_TAG),
    }
    events = instance.get_records_for_run(run.run_id, of_type=RUN_EVENT_TYPES).records
    step_attempt = 1
    attempts: list[Attempt] = []
    step_error: str | None = None
    for event_record in events:
        event = event_record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY:
            step_attempt += 1
            continue
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            step_error = _root_error(event.event_specific_data.error)  # type: ignore[union-attr]
            continue
        outcome = read_outcome(event_record)
        if outcome is None or outcome.document_key != key:
            continue
        attempts.append(
            Attempt(
                time=datetime.fromtimestamp(outcome.timestamp, UTC),
                step_attempt=step_attempt,
                asset=outcome.asset_key.to_user_string(),
                outcome=outcome.status or "materialized",
                error_kind=outcome.error_kind,
                error=outcome.error_message,
                model=outcome.model,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
                cost_usd=outcome.cost_usd,
                cache_hit=outcome.cache_hit,
                batch_id=outcome.batch_id,
                **base,
            )
        )
    if not any(a.asset == EXTRACTION_KEY.to_user_string() for a in attempts):
        # Planned, but nothing recorded for this document: the run is under way, or it died
        # (or failed before reaching the document).
        finished = run.is_finished
        attempts.append(
            Attempt(
                time=datetime.fromtimestamp(record.create_timestamp.timestamp(), UTC),
                step_attempt=step_attempt,
                asset=EXTRACTION_KEY.to_user_string(),
                outcome="no_outcome" if finished else "in_progress",
                error_kind="run_failed" if run.status == dg.DagsterRunStatus.FAILURE else None,
                error=step_error if run.status == dg.DagsterRunStatus.FAILURE else None,
                **base,
            )
        )
    return attempts


def run_trigger(run: dg.DagsterRun) -> str:
    """Who asked for a run: our trigger tag, else what Dagster's tags say."""
    tags = run.tags
    if TRIGGER_TAG in tags:
        return tags[TRIGGER_TAG]
    if tags.get(RETRY_NUMBER_TAG, "0") != "0":
        return f"run retry of {tags.get(PARENT_RUN_TAG, '?')[:8]}"
    if "dagster/backfill" in tags:
        return f"backfill {tags['dagster/backfill']}"
    if "dagster/schedule_name" in tags:
        return f"schedule {tags['dagster/schedule_name']}"
    if "dagster/sensor_name" in tags:
        return f"sensor {tags['dagster/sensor_name']}"
    return "manual"


def _root_error(error: Any) -> str | None:
    """The innermost cause: retry and framework wrappers hide the user's error."""
    if error is None:
        return None
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return str(error.message).strip()
