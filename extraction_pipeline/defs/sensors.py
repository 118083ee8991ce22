"""The drop-folder sensor: new PDFs become `documents` partitions and runs in the same tick;
files that cannot become documents are refused, recorded in the registry and logged."""

from collections.abc import Sequence

import dagster as dg

from extraction_pipeline.core.intake.admission import IntakeDecision, take_documents
from extraction_pipeline.core.intake.inbox import IntakeCursor, plan_tick
from extraction_pipeline.core.intake.sources import open_inbox
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.jobs import intake_job, source_job
from extraction_pipeline.defs.resources import DocumentStoreResource
from extraction_pipeline.instance.document_runs import DocumentsRun
from extraction_pipeline.instance.names import DOCUMENTS_PARTITIONS_NAME
from extraction_pipeline.instance.partition_status import (
    live_keys_within_limit,
    refresh_partition_status,
)


def intake_run_requests(decision: IntakeDecision, per_run: int) -> list[dg.RunRequest]:
    """Ranged runs for the documents registered this tick (each group is contiguous in partition
    order, having been added together): the readable ones through extraction, in runs of at most
    `per_run`, the unreadable ones through source_document alone; and a run per restored
    document."""
    runs = [
        DocumentsRun(intake_job.name, decision.new_keys[start : start + per_run])
        for start in range(0, len(decision.new_keys), per_run)
    ]
    if decision.unreadable_keys:
        runs.append(DocumentsRun(source_job.name, decision.unreadable_keys))
    requests = [run.request(f"intake:{_span(run.keys)}") for run in runs]
    requests += [
        DocumentsRun(intake_job.name, [key]).request(f"intake:{key}:restored")
        for key in decision.restored_keys
    ]
    return requests


def _span(keys: Sequence[str]) -> str:
    return keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]}"


def tick_interval(seconds: int) -> int:
    """The sensor's minimum interval for ticks every `seconds`. The daemon looks at sensors in a
    5-second loop and a tick is due when the interval has passed since the last one started; a
    tick due at 5.0 s is often looked at 4.99 s after, and then waits a whole loop more (10 s
    between ticks, measured). A second's margin keeps the interval the one asked for."""
    return max(1, seconds - 1)


def build_inbox_sensor(settings: Settings) -> dg.SensorDefinition:
    where = str(settings.inbox)

    @dg.sensor(
        name="inbox_sensor",
        jobs=[intake_job, source_job],
        minimum_interval_seconds=tick_interval(settings.sensor_interval_seconds),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Watches {where} for PDFs; each new document (by content) becomes a partition of "
            "`documents` and is materialised in the same tick."
        ),
    )
    def inbox_sensor(
        context: dg.SensorEvaluationContext, document_store: DocumentStoreResource
    ) -> dg.SensorResult:
        inbox = open_inbox(settings.inbox)  # per tick: an S3 client must not outlive a fork
        plan = plan_tick(
            inbox,
            IntakeCursor.parse(context.cursor),
            settle_seconds=settings.settle_seconds,
            max_files=settings.sensor_max_files,
            watch_seconds=settings.sensor_watch_seconds,
        )
        decision = take_documents(
            plan,
            inbox,
            document_store.registry(),
            partition_exists=lambda key: context.instance.has_dynamic_partition(
                DOCUMENTS_PARTITIONS_NAME, key
            ),
            limits=document_store.pdf_limits(),
        )
        _log_decision(context, decision)
        new_cursor = decision.cursor.serialize()
        if not decision.keys_to_add:
            return dg.SensorResult(skip_reason=decision.summary(), cursor=new_cursor)
        # Added here in one statement rather than returned as a DynamicPartitionsRequest: the
        # daemon checks a request's keys one query at a time (1,000 new files: 0.8-1.3 s of
        # round trips on top of the tick). If the tick is lost after this, the next one finds
        # the documents registered with their partitions, and nightly_intake runs them.
        context.instance.add_dynamic_partitions(
            DOCUMENTS_PARTITIONS_NAME, list(decision.keys_to_add)
        )
        context.log.info(
            f"added {len(decision.keys_to_add)} partitions of {DOCUMENTS_PARTITIONS_NAME}: "
            f"{_span(decision.keys_to_add)}"
        )
        if settings.operations.archive_after_days > 0:
            _refresh_partition_status(context.instance, decision.keys_to_add)
        return dg.SensorResult(
            run_requests=intake_run_requests(decision, settings.documents_per_run),
            cursor=new_cursor,
        )

    return inbox_sensor


def _refresh_partition_status(instance: dg.DagsterInstance, added: Sequence[str]) -> None:
    """Archiving keeps the live set small: storing the assets' partition status for it now
    spares the UI a rebuild from the whole history (instance/partition_status.py)."""
    keys = live_keys_within_limit(instance)
    if keys is not None:
        new = set(added)
        refresh_partition_status(instance, keys, before=[k for k in keys if k not in new])


def _log_decision(context: dg.SensorEvaluationContext, decision: IntakeDecision) -> None:
    for name, key in decision.duplicates:
        context.log.info(f"{name}: same content as document {key}; not a new document")
    for key, reason in decision.unreadable:
        context.log.warning(f"{key}: unreadable ({reason}); recorded by its own source run")
    for refusal in decision.refused:
        context.log.warning(
            f"{refusal.file_name}: refused, {refusal.reason.value}: {refusal.message}"
        )
    for name in decision.vanished:
        context.log.warning(f"{name}: removed from the inbox before it could be read")
    for name, error in decision.retrying:
        context.log.warning(f"{name}: could not be read ({error}); trying again next tick")
    if decision.keys_to_add or decision.duplicates or decision.deferred or decision.refused:
        context.log.info(decision.summary())
