"""The `archive_settled` sensor: keeps the live set of `documents` partitions bounded by
archiving settled documents registered EXTRACTION_ARCHIVE_AFTER_DAYS ago or more (off at 0).
What is settled, and why their history and rows survive, is in core.operations.archive."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from extraction_pipeline.core.operations.archive import WINDOW, ArchiveCursor
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.resources import DocumentStoreResource
from extraction_pipeline.instance.archive import Standing, archive_pass, remove_partitions
from extraction_pipeline.instance.partition_status import refresh_partition_status

ARCHIVE_INTERVAL_SECONDS = 60


def build_archive_sensor(settings: Settings) -> dg.SensorDefinition:
    operations = settings.operations
    after_days = operations.archive_after_days

    @dg.sensor(
        name="archive_settled",
        minimum_interval_seconds=ARCHIVE_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Removes the partitions of settled documents (extracted, needing review, dead "
            f"letters) registered EXTRACTION_ARCHIVE_AFTER_DAYS ({after_days:g}; 0: off) days "
            f"ago or more, up to {WINDOW} looked at per tick. Their history stays in the event "
            "log, their rows in the tables; dropping the file again restores the partition."
        ),
    )
    def archive_settled(
        context: dg.SensorEvaluationContext, document_store: DocumentStoreResource
    ) -> dg.SensorResult:
        if after_days <= 0:
            return dg.SensorResult(skip_reason="archiving is off (EXTRACTION_ARCHIVE_AFTER_DAYS=0)")
        store = document_store.object_store()
        instance = context.instance
        standing = Standing.read(instance, store)
        plan = archive_pass(
            standing,
            store,
            ArchiveCursor.parse(context.cursor),
            datetime.now(UTC),
            timedelta(days=after_days),
        )
        # Removed here rather than returned as a request to the daemon, so that the partition
        # status stored next is stamped for the set as it now is.
        remove_partitions(instance, plan.archive)
        live = standing.live_after(plan.archive)
        refreshed = refresh_partition_status(instance, live, before=standing.keys)
        if refreshed:
            context.log.info(
                f"stored the partition status of {' and '.join(refreshed)} for the "
                f"{len(live)} live documents"
            )
        cursor = plan.cursor.serialize()
        if not plan.archive:
            return dg.SensorResult(skip_reason=plan.summary(), cursor=cursor)
        context.log.info(plan.summary())
        return dg.SensorResult(cursor=cursor)

    return archive_settled
