"""Runs followed from any process: a run looked up by id, the run retries that followed it, and
what it did to each of its documents.

Pure queries of Dagster's run and event-log storage (the state lives there, so any process can
ask, before or after `dev` restarted); `extraction-pipeline runs status|wait` prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from extraction_pipeline.instance.document_runs import run_document_keys
from extraction_pipeline.instance.history import run_trigger
from extraction_pipeline.instance.names import (
    DOCUMENTS_PARTITIONS_NAME,
    EXTRACTION_KEY,
    PARENT_RUN_TAG,
    RETRY_NUMBER_TAG,
    WILL_RETRY_TAG,
)
from extraction_pipeline.instance.outcomes import (
    OUTCOME_EVENT_TYPES,
    RecordedOutcome,
    read_outcomes,
)

NO_OUTCOME = "no_outcome"
FINISHED = frozenset(
    status.value
    for status in (
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.CANCELED,
    )
)
# A chain of run retries longer than this is a loop in the tags, not retries (max_retries: 2).
MAX_CHAIN = 100


@dataclass(frozen=True)
class DocumentOutcome:
    """What a run did to one of its documents: `outcome` is extracted, needs_review, failed, or
    no_outcome (not reached yet, or the run ended before it recorded one)."""

    document_key: str
    outcome: str
    error_kind: str | None = None
    error: str | None = None
    run_id: str | None = None  # the run that recorded the outcome


@dataclass(frozen=True)
class RunReport:
    """One run as `runs status` shows it. `status` is Dagster's (QUEUED, STARTED, SUCCESS,
    FAILURE, CANCELED...); `retry_run_id` is the run that Dagster's run retries launched after
    this one failed; `retry_pending` says run retries will launch one and have not yet."""

    run_id: str
    status: str
    job: str
    trigger: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    documents: tuple[DocumentOutcome, ...]
    parent_run_id: str | None
    retry_run_id: str | None
    retry_pending: bool

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("created_at", "started_at", "ended_at"):
            moment = getattr(self, name)
            data[name] = None if moment is None else moment.isoformat()
        data["finished"] = self.finished
        return data


@dataclass(frozen=True)
class RetryChain:
    """A run and the run retries that followed it, oldest first. `settled`: the last run has
    finished and no retry of it is to come, so its status is the chain's."""

    runs: tuple[dg.RunRecord, ...]
    settled: bool

    @property
    def final(self) -> dg.DagsterRun:
        return self.runs[-1].dagster_run

    @property
    def succeeded(self) -> bool:
        return self.settled and self.final.status == dg.DagsterRunStatus.SUCCESS


def run_report(
    instance: dg.DagsterInstance, run_id: str, ordered_keys: Sequence[str] | None = None
) -> RunReport | None:
    """The run `run_id` with each of its documents' outcome in it; None for an unknown id.
    `ordered_keys` (every document in partition order) is read when not given."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None
    run = record.dagster_run
    retry = retry_of(instance, run_id)
    keys = ordered_keys if ordered_keys is not None else document_order(instance)
    return RunReport(
        run_id=run.run_id,
        status=run.status.value,
        job=run.job_name,
        trigger=run_trigger(run),
        created_at=datetime.fromtimestamp(record.create_timestamp.timestamp(), UTC),
        started_at=_moment(record.start_time),
        ended_at=_moment(record.end_time),
        documents=tuple(document_outcomes(instance, [run], keys)),
        parent_run_id=run.tags.get(PARENT_RUN_TAG),
        retry_run_id=None if retry is None else retry.dagster_run.run_id,
        retry_pending=retry is None and retry_expected(run, instance.run_retries_enabled),
    )


def retry_of(instance: dg.DagsterInstance, run_id: str) -> dg.RunRecord | None:
    """The run that Dagster's run retries launched after `run_id` failed, if any (a run
    re-executed by hand names its parent too, but carries no retry number)."""
    children = instance.get_run_records(dg.RunsFilter(tags={PARENT_RUN_TAG: run_id}))
    retries = [c for c in children if RETRY_NUMBER_TAG in c.dagster_run.tags]
    return max(retries, key=lambda record: record.create_timestamp, default=None)


def retry_expected(run: dg.DagsterRun, retries_enabled: bool) -> bool:
    """Whether run retries will (or may still decide to) relaunch `run`: it failed, and its
    `dagster/will_retry` tag says so or is not written yet (Dagster writes it just after the
    failure; the daemon decides when it is missing)."""
    if run.status != dg.DagsterRunStatus.FAILURE or not retries_enabled:
        return False
    will_retry = run.tags.get(WILL_RETRY_TAG)
    return will_retry is None or will_retry.lower() == "true"


def follow_retries(instance: dg.DagsterInstance, run_id: str) -> RetryChain | None:
    """`run_id` and the run retries that followed it, to the latest; None for an unknown id."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None
    chain = [record]
    while len(chain) < MAX_CHAIN and (retry := retry_of(instance, chain[-1].dagster_run.run_id)):
        chain.append(retry)
    last = chain[-1].dagster_run
    settled = last.is_finished and not retry_expected(last, instance.run_retries_enabled)
    return RetryChain(tuple(chain), settled)


def document_outcomes(
    instance: dg.DagsterInstance, runs: Sequence[dg.DagsterRun], ordered_keys: Sequence[str]
) -> list[DocumentOutcome]:
    """The documents of `runs[0]`, each with its latest outcome in `runs` (one run, or a run and
    its retries, oldest first). `ordered_keys`: every document in partition order."""
    latest: dict[str, RecordedOutcome] = {}
    for run in runs:
        records = instance.get_records_for_run(run.run_id, of_type=set(OUTCOME_EVENT_TYPES))
        for outcome in read_outcomes(records.records):
            # A stored source is no outcome; a failed one (unreadable) is the document's.
            if outcome.asset_key == EXTRACTION_KEY or outcome.is_failure:
                latest[outcome.document_key] = outcome
    return [
        _document_outcome(key, latest.get(key)) for key in run_document_keys(runs[0], ordered_keys)
    ]


def document_order(instance: dg.DagsterInstance) -> list[str]:
    """Every document key in partition order (what a ranged run's tags are read against)."""
    return list(instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME))


def _document_outcome(key: str, outcome: RecordedOutcome | None) -> DocumentOutcome:
    if outcome is None:
        return DocumentOutcome(key, NO_OUTCOME)
    return DocumentOutcome(
        document_key=key,
        outcome=outcome.status or "failed",
        error_kind=outcome.error_kind,
        error=outcome.error_message,
        run_id=outcome.run_id,
    )


def _moment(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
