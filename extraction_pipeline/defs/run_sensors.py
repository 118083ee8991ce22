"""Run-status sensors: dead letters and webhook notifications.

A failed run that the run-retry daemon will retry is ignored (it is not over yet). For the
others, and for successful runs, `settle_run` judges each document of the run with
`core.dead_letters.judge_run`: a permanent failure (an unreadable document, a refusal...), or one
that has used up EXTRACTION_MAX_ATTEMPTS, becomes a dead letter (data dir +
`dead_letters.parquet`) and is announced to the webhook when one is configured; a document the
run extracted is a dead letter no more. `extraction-pipeline ingest`, whose in-process runs no
sensor sees, calls the same `settle_run` after each run. Webhook trouble is logged, never raised.
"""

import functools
import logging
from datetime import UTC, datetime

import dagster as dg

from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.operations.dead_letters import (
    DeadLetterStore,
    DocumentFailure,
    RunVerdict,
    judge_run,
)
from extraction_pipeline.core.operations.lifecycle import RetryPolicy
from extraction_pipeline.core.operations.notify import post_json
from extraction_pipeline.core.settings import OperationsSettings, Settings
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.defs.resources import DocumentStoreResource
from extraction_pipeline.instance.document_runs import run_document_keys
from extraction_pipeline.instance.facts import busy_documents, extraction_attempts_of
from extraction_pipeline.instance.names import (
    DEAD_LETTERS_KEY,
    DOCUMENTS_PARTITIONS_NAME,
    EXTRACTION_KEY,
    SOURCE_KEY,
    WILL_RETRY_TAG,
)
from extraction_pipeline.instance.outcomes import OUTCOME_EVENT_TYPES, read_outcomes

dead_letters_asset = dg.AssetSpec(
    DEAD_LETTERS_KEY,
    description="Documents that failed for good (unreadable, permanent error, or "
    "EXTRACTION_MAX_ATTEMPTS used up) and need a person: tables/dead_letters.parquet, kept by "
    "the dead_letters sensor and by `extraction-pipeline ingest`.",
    group_name="tables",
    kinds={"parquet"},
    deps=[SOURCE_KEY, EXTRACTION_KEY],
)


def run_outcomes(
    instance: dg.DagsterInstance, run_id: str
) -> tuple[dict[str, DocumentFailure], set[str]]:
    """Per document of a run: its last failure, and the set of documents it extracted."""
    records = instance.get_records_for_run(run_id, of_type=set(OUTCOME_EVENT_TYPES)).records
    failures: dict[str, DocumentFailure] = {}
    extracted: set[str] = set()
    for outcome in read_outcomes(records):
        if outcome.is_submission:
            # Handed to a batch (again, after a failed line): its collecting run judges it.
            failures.pop(outcome.document_key, None)
            continue
        if outcome.materialized:
            if outcome.asset_key == EXTRACTION_KEY:
                extracted.add(outcome.document_key)
            continue
        failures[outcome.document_key] = DocumentFailure(
            stage="source" if outcome.asset_key == SOURCE_KEY else "extraction",
            error_kind=outcome.error_kind or "",
            error=outcome.error_message or "",
            # A failure that does not say is taken as worth retrying (it is not dead yet).
            retryable=outcome.retryable is not False,
            file_name=outcome.file_name,
        )
    return failures, extracted


def settle_run(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    run_error: str | None,
    store: ObjectStore,
    registry: DocumentRegistry,
    operations: OperationsSettings,
    log: logging.Logger,
) -> dg.AssetMaterialization | None:
    """Judge a finished run's documents, store the verdict and announce its dead letters.
    `run_error` is the run's failure message (None when it succeeded). Returns the
    `dead_letters` materialisation to report when the table changed."""
    failures, extracted = run_outcomes(instance, run.run_id)
    # Every partition key, read at most once (100,000 keys at scale) and only when needed.
    partition_keys = functools.cache(
        lambda: instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
    )
    if run_error is None:
        # Only what the run recorded counts for a run that succeeded: no need to list the
        # partitions (100,000 keys at scale) to find its range.
        keys = [*extracted, *failures]
    else:
        keys = run_document_keys(run, partition_keys())
    failed = [k for k in keys if k not in extracted and (k in failures or run_error is not None)]
    if failed:
        # A document another run has taken up since (the retry schedule, a backfill) is that
        # run's to judge: announcing it dead now would be false once that run extracts it.
        busy = busy_documents(instance, partition_keys())
        keys = [k for k in keys if k in extracted or k not in busy]
        failed = [k for k in failed if k not in busy]
    tried = extraction_attempts_of(instance, failed, retryability_below=0)  # counts only
    verdict = judge_run(
        run_id=run.run_id,
        document_keys=keys,
        extracted=extracted,
        failures=failures,
        attempts={key: n for key, (n, _) in tried.items()},
        policy=RetryPolicy(max_attempts=operations.max_attempts),
        run_error=run_error,
        file_names={k: r.file_name for k in failed if (r := registry.get(k)) is not None},
        now=datetime.now(UTC),
    )
    letters = DeadLetterStore(store)
    if not letters.apply(verdict):
        return None
    _announce(verdict, operations, log)
    return dg.AssetMaterialization(
        asset_key=DEAD_LETTERS_KEY,
        metadata={
            "dagster/row_count": len(letters.all()),
            "new_dead_letters": dg.MetadataValue.json(
                [letter.document_key for letter in verdict.dead_letters]
            ),
            "cleared": dg.MetadataValue.json(list(verdict.cleared)),
        },
    )


def _announce(verdict: RunVerdict, operations: OperationsSettings, log: logging.Logger) -> None:
    for letter in verdict.dead_letters:
        if not operations.webhook_url:
            log.info(f"{letter.document_key}: dead letter ({letter.error_kind})")
            continue
        delivered = post_json(
            operations.webhook_url, {"event": "dead_letter", **letter.model_dump(mode="json")}
        )
        log.info(f"{letter.document_key}: dead letter; webhook delivered={delivered}")


def build_run_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    operations = settings.operations

    @dg.run_failure_sensor(
        name="dead_letters",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records dead letters from failed runs (not those the run-retry daemon "
        "will retry) and notifies EXTRACTION_WEBHOOK_URL.",
    )
    def dead_letters(
        context: dg.RunFailureSensorContext, document_store: DocumentStoreResource
    ) -> dg.SensorResult | None:
        run = context.dagster_run
        if run.tags.get(WILL_RETRY_TAG) == "true":
            context.log.info(f"run {run.run_id} will be retried: not a dead letter yet")
            return None
        event = settle_run(
            context.instance,
            run,
            context.failure_event.message or "the run failed",
            document_store.object_store(),
            document_store.registry(),
            operations,
            context.log,
        )
        return dg.SensorResult(asset_events=[event]) if event is not None else None

    @dg.run_status_sensor(
        name="run_notifications",
        run_status=dg.DagsterRunStatus.SUCCESS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Clears dead letters of documents a run extracted, and notifies "
        "EXTRACTION_WEBHOOK_URL of successful runs when EXTRACTION_NOTIFY_SUCCESS is set.",
    )
    def run_notifications(
        context: dg.RunStatusSensorContext, document_store: DocumentStoreResource
    ) -> dg.SensorResult | None:
        run = context.dagster_run
        event = settle_run(
            context.instance,
            run,
            None,
            document_store.object_store(),
            document_store.registry(),
            operations,
            context.log,
        )
        if operations.webhook_url and operations.notify_success:
            _, extracted = run_outcomes(context.instance, run.run_id)
            if extracted:
                post_json(
                    operations.webhook_url,
                    {
                        "event": "run_succeeded",
                        "run_id": run.run_id,
                        "job": run.job_name,
                        "documents_extracted": sorted(extracted),
                    },
                )
        return dg.SensorResult(asset_events=[event]) if event is not None else None

    return [dead_letters, run_notifications]
