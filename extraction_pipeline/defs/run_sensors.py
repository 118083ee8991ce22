"""Run-status sensors: dead letters and webhook notifications.

A failed run that the run-retry daemon will retry is ignored (it is not over yet). For the
others, each document the run failed is classified: a permanent failure, or one that has used
up EXTRACTION_MAX_ATTEMPTS, becomes a dead letter (data dir + `dead_letters.parquet`) and is
announced to the webhook when one is configured. Webhook trouble is logged, never raised.
"""

from datetime import UTC, datetime

import dagster as dg

from extraction_pipeline.audit.facts import extraction_attempts, run_document_keys
from extraction_pipeline.core.dead_letters import DeadLetter, DeadLetterStore
from extraction_pipeline.core.lifecycle import (
    AssetState,
    DocumentFacts,
    RetryPolicy,
    is_dead_letter,
)
from extraction_pipeline.core.notify import post_json
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.keys import EXTRACTION_KEY, SOURCE_KEY
from extraction_pipeline.defs.partitions import DOCUMENTS_PARTITIONS_NAME
from extraction_pipeline.defs.resources import DocumentStoreResource

DEAD_LETTERS_KEY = dg.AssetKey("dead_letters")
WILL_RETRY_TAG = "dagster/will_retry"

dead_letters_asset = dg.AssetSpec(
    DEAD_LETTERS_KEY,
    description="Documents that failed for good (permanent error, or EXTRACTION_MAX_ATTEMPTS "
    "used up) and need a person: tables/dead_letters.parquet, kept by the dead_letters sensor.",
    group_name="tables",
    kinds={"parquet"},
    deps=[EXTRACTION_KEY],
)


def run_outcomes(instance: dg.DagsterInstance, run_id: str) -> tuple[dict[str, dict], set[str]]:
    """Per document of a run: its last failure (error, kind, retryable), and the set of
    documents it extracted."""
    records = instance.get_records_for_run(
        run_id,
        of_type={dg.DagsterEventType.ASSET_OBSERVATION, dg.DagsterEventType.ASSET_MATERIALIZATION},
    ).records
    failures: dict[str, dict] = {}
    extracted: set[str] = set()
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.partition is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            if event.asset_key == EXTRACTION_KEY:
                extracted.add(event.partition)
            continue
        if event.asset_key not in (SOURCE_KEY, EXTRACTION_KEY):
            continue
        metadata = event.event_specific_data.asset_observation.metadata  # type: ignore[union-attr]
        failures[event.partition] = {
            "asset": event.asset_key.to_user_string(),  # type: ignore[union-attr]
            "error": str(metadata.get("error_message", dg.MetadataValue.text("")).value),
            "error_kind": str(metadata.get("error_kind", dg.MetadataValue.text("")).value),
            "retryable": bool(metadata.get("retryable", dg.MetadataValue.bool(True)).value),
            "file_name": str(metadata.get("file_name", dg.MetadataValue.text("")).value),
        }
    return failures, extracted


def build_run_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    operations = settings.operations
    policy = RetryPolicy(max_attempts=operations.max_attempts)

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
        keys = run_document_keys(
            run, context.instance.get_dynamic_partitions(DOCUMENTS_PARTITIONS_NAME)
        )
        failures, extracted = run_outcomes(context.instance, run.run_id)
        store = DeadLetterStore(document_store.object_store())
        registry = document_store.registry()
        run_error = context.failure_event.message or "the run failed"
        new_letters = []
        for key in keys:
            if key in extracted:
                store.clear(key)
                continue
            failure = failures.get(key, {"error": run_error, "error_kind": "run_failed"})
            attempts, _ = extraction_attempts(context.instance, key)
            source_failed = failure.get("asset") == SOURCE_KEY.to_user_string()
            facts = DocumentFacts(
                document_key=key,
                source=AssetState.FAILED if source_failed else AssetState.MATERIALIZED,
                extraction=AssetState.FAILED,
                attempts=attempts,
                last_error_retryable=failure.get("retryable"),
            )
            if not (source_failed or is_dead_letter(facts, policy)):
                continue
            record = registry.get(key)
            letter = DeadLetter(
                document_key=key,
                file_name=failure.get("file_name") or (record.file_name if record else ""),
                run_id=run.run_id,
                error_kind=failure["error_kind"],
                error=failure["error"],
                attempts=max(attempts, 1),
                recorded_at=datetime.now(UTC),
            )
            store.record(letter)
            new_letters.append(letter)
            if operations.webhook_url:
                delivered = post_json(
                    operations.webhook_url,
                    {"event": "dead_letter", **letter.model_dump(mode="json")},
                )
                context.log.info(f"{key}: dead letter; webhook delivered={delivered}")
        if not new_letters:
            return None
        count = store.write_table()
        return dg.SensorResult(
            asset_events=[
                dg.AssetMaterialization(
                    asset_key=DEAD_LETTERS_KEY,
                    metadata={
                        "dagster/row_count": count,
                        "new_dead_letters": dg.MetadataValue.json(
                            [letter.document_key for letter in new_letters]
                        ),
                    },
                )
            ]
        )

    @dg.run_status_sensor(
        name="run_notifications",
        run_status=dg.DagsterRunStatus.SUCCESS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Clears dead letters of documents a run extracted, and notifies "
        "EXTRACTION_WEBHOOK_URL of successful runs when EXTRACTION_NOTIFY_SUCCESS is set.",
    )
    def run_notifications(
        context: dg.RunStatusSensorContext, document_store: DocumentStoreResource
    ) -> None:
        run = context.dagster_run
        _, extracted = run_outcomes(context.instance, run.run_id)
        store = DeadLetterStore(document_store.object_store())
        if any([store.clear(key) for key in extracted]):
            store.write_table()
        if operations.webhook_url and operations.notify_success and extracted:
            post_json(
                operations.webhook_url,
                {
                    "event": "run_succeeded",
                    "run_id": run.run_id,
                    "job": run.job_name,
                    "documents_extracted": sorted(extracted),
                },
            )

    return [dead_letters, run_notifications]
