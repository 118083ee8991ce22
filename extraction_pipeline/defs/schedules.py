"""Recurring intake and retries: which documents to run is decided in core.lifecycle."""

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.operations.lifecycle import (
    AssetState,
    DocumentFacts,
    RetryPolicy,
    contiguous_batches,
    needs_retry,
)
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.jobs import extraction_job, intake_job
from extraction_pipeline.defs.resources import DocumentStoreResource
from extraction_pipeline.instance.document_runs import DocumentsRun
from extraction_pipeline.instance.facts import (
    all_document_keys,
    attempted_documents,
    busy_documents,
    extracted_documents,
    extraction_attempts_of,
    never_attempted,
)
from extraction_pipeline.instance.names import EXTRACTION_KEY, TRIGGER_TAG


def batch_run_requests(
    batches: Sequence[Sequence[str]], job: str, trigger: str, tick: str
) -> list[dg.RunRequest]:
    """One run per batch of documents adjacent in partition order; the run key carries the tick,
    so evaluating the same tick twice launches nothing new."""
    return [
        DocumentsRun(job, batch, {TRIGGER_TAG: trigger}).request(
            f"{trigger}:{tick}:{batch[0]}..{batch[-1]}"
        )
        for batch in batches
    ]


def failed_document_facts(
    instance: dg.DagsterInstance, keys: Sequence[str], policy: RetryPolicy
) -> list[DocumentFacts]:
    """Facts of the documents whose extraction was attempted, is not extracted and has no run
    under way (queued included) - the failed ones - with their attempts, and retryability where
    `policy` leaves the verdict to it (not for those that used up their attempts)."""
    busy = busy_documents(instance, keys)
    extracted = extracted_documents(instance, keys)
    idle = [k for k in keys if k not in busy and k not in extracted]
    failed = attempted_documents(instance, idle, assets=[EXTRACTION_KEY])
    tried = extraction_attempts_of(
        instance, [k for k in idle if k in failed], retryability_below=policy.max_attempts
    )
    facts = []
    for key, (attempts, retryable) in tried.items():
        facts.append(
            DocumentFacts(
                document_key=key,
                source=AssetState.MATERIALIZED,
                extraction=AssetState.FAILED,
                attempts=attempts,
                last_error_retryable=retryable,
            )
        )
    return facts


def registered_recently(registry: DocumentRegistry, key: str, seconds: float) -> bool:
    """The inbox sensor adds a partition a moment before it creates its run: leave documents
    it registered just now to it."""
    record = registry.get(key)
    return record is not None and time.time() - record.registered_at.timestamp() < seconds


def build_schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    operations = settings.operations
    policy = RetryPolicy(max_attempts=operations.max_attempts)
    grace_seconds = 2 * settings.sensor_interval_seconds + settings.settle_seconds + 60

    @dg.schedule(
        name="nightly_intake",
        cron_schedule=operations.nightly_cron,
        execution_timezone=operations.timezone,
        job=intake_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Runs every document that has no extraction yet and none under way "
        f"(never attempted), in batches of up to {settings.documents_per_run}.",
    )
    def nightly_intake(
        context: dg.ScheduleEvaluationContext, document_store: DocumentStoreResource
    ) -> dg.RunRequest | list[dg.RunRequest] | dg.SkipReason:
        instance = context.instance
        keys = all_document_keys(instance)
        registry = document_store.registry()
        todo = [
            key
            for key in never_attempted(instance, keys)
            if not registered_recently(registry, key, grace_seconds)
        ]
        skip = f"all {len(keys)} documents have an extraction or a run"
        return _runs_or_skip(context, keys, todo, "nightly_intake", intake_job.name, skip)

    @dg.schedule(
        name="retry_failed",
        cron_schedule=operations.retry_cron,
        execution_timezone=operations.timezone,
        job=extraction_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Extracts failed documents again, up to EXTRACTION_MAX_ATTEMPTS "
        f"({operations.max_attempts}) attempts; after that, or after a permanent failure, the "
        "document is a dead letter.",
    )
    def retry_failed(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | list[dg.RunRequest] | dg.SkipReason:
        keys = all_document_keys(context.instance)
        facts = failed_document_facts(context.instance, keys, policy)
        todo = [f.document_key for f in facts if needs_retry(f, policy)]
        skip = "no failed document is due for a retry"
        return _runs_or_skip(context, keys, todo, "retry_failed", extraction_job.name, skip)

    def _runs_or_skip(
        context: dg.ScheduleEvaluationContext,
        keys: Sequence[str],
        todo: Sequence[str],
        trigger: str,
        job: str,
        skip: str,
    ) -> list[dg.RunRequest] | dg.SkipReason:
        batches = contiguous_batches(keys, todo, settings.documents_per_run)
        batches = batches[: operations.max_runs_per_tick]
        if not batches:
            return dg.SkipReason(skip)
        return batch_run_requests(batches, job, trigger, _tick(context))

    return [nightly_intake, retry_failed]


def _tick(context: dg.ScheduleEvaluationContext) -> str:
    moment = context.scheduled_execution_time or datetime.now(UTC)
    return moment.strftime("%Y%m%dT%H%M%S")
