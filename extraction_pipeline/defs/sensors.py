"""The drop-folder sensor: new PDFs become `documents` partitions and runs in the same tick."""

import time
from pathlib import Path

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from extraction_pipeline.core.inbox import IntakeCursor, plan_intake, scan_inbox
from extraction_pipeline.core.intake import IntakeDecision, take_documents
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.partitions import DOCUMENTS_PARTITIONS_NAME, documents_partitions
from extraction_pipeline.defs.resources import DocumentStoreResource

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def intake_run_requests(decision: IntakeDecision) -> list[dg.RunRequest]:
    """One ranged run for the documents registered this tick (they are contiguous in partition
    order, having been added together), and one run per restored document."""
    requests: list[dg.RunRequest] = []
    new = decision.new_keys
    if len(new) == 1:
        requests.append(dg.RunRequest(partition_key=new[0], run_key=f"intake:{new[0]}"))
    elif new:
        requests.append(
            dg.RunRequest(
                run_key=f"intake:{new[0]}..{new[-1]}",
                tags={RANGE_START_TAG: new[0], RANGE_END_TAG: new[-1]},
            )
        )
    requests += [
        dg.RunRequest(partition_key=key, run_key=f"intake:{key}:restored")
        for key in decision.restored_keys
    ]
    return requests


def build_inbox_sensor(
    settings: Settings, job: dg.JobDefinition | UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    inbox: Path = settings.inbox

    @dg.sensor(
        name="inbox_sensor",
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Watches {inbox} for PDFs; each new document (by content) becomes a partition of "
            "`documents` and is materialised in the same tick."
        ),
    )
    def inbox_sensor(
        context: dg.SensorEvaluationContext, document_store: DocumentStoreResource
    ) -> dg.SensorResult:
        now_ns = time.time_ns()  # before listing: see plan_intake
        cursor = IntakeCursor.parse(context.cursor)
        plan = plan_intake(
            scan_inbox(inbox),
            cursor,
            now_ns=now_ns,
            settle_seconds=settings.settle_seconds,
            max_files=settings.sensor_max_files,
        )
        decision = take_documents(
            plan,
            inbox,
            document_store.registry(),
            partition_exists=lambda key: context.instance.has_dynamic_partition(
                DOCUMENTS_PARTITIONS_NAME, key
            ),
        )
        _log_decision(context, decision)
        if not decision.keys_to_add:
            return dg.SensorResult(skip_reason=decision.summary(), cursor=plan.cursor.serialize())
        return dg.SensorResult(
            run_requests=intake_run_requests(decision),
            dynamic_partitions_requests=[
                documents_partitions.build_add_request(list(decision.keys_to_add))
            ],
            cursor=plan.cursor.serialize(),
        )

    return inbox_sensor


def _log_decision(context: dg.SensorEvaluationContext, decision: IntakeDecision) -> None:
    for name, key in decision.duplicates:
        context.log.info(f"{name}: same content as document {key}; not a new document")
    for name in decision.ignored:
        context.log.info(f"{name}: ignored, not a PDF")
    for name in decision.vanished:
        context.log.warning(f"{name}: removed from the inbox before it could be read")
    if decision.keys_to_add or decision.duplicates or decision.deferred:
        context.log.info(decision.summary())
