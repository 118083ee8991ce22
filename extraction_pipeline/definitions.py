"""The code location: one `Definitions` wiring defs/ together from the deployment settings."""

import dagster as dg

from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.archive_sensor import build_archive_sensor
from extraction_pipeline.defs.batch_sensor import build_batch_sensor, model_batches_asset
from extraction_pipeline.defs.document_assets import build_document_assets
from extraction_pipeline.defs.jobs import extraction_job, intake_job, source_job
from extraction_pipeline.defs.resources import DocumentStoreResource, ExtractionAgentResource
from extraction_pipeline.defs.run_sensors import build_run_sensors, dead_letters_asset
from extraction_pipeline.defs.schedules import build_schedules
from extraction_pipeline.defs.sensors import build_inbox_sensor
from extraction_pipeline.defs.table_assets import build_table_assets
from extraction_pipeline.defs.tables_sensor import build_tables_sensor


def build_definitions(settings: Settings) -> dg.Definitions:
    tables = build_table_assets(settings.extraction.schema_ref)
    return dg.Definitions(
        assets=[
            build_document_assets(
                settings.extraction,
                settings.operations.max_attempts,
                settings.documents_per_run,
            ),
            tables,
            dead_letters_asset,
            model_batches_asset,
        ],
        jobs=[intake_job, source_job, extraction_job],
        schedules=build_schedules(settings),
        sensors=[
            build_inbox_sensor(settings),
            *build_run_sensors(settings),
            build_batch_sensor(settings),
            build_archive_sensor(settings),
            build_tables_sensor(settings, list(tables.keys)),
        ],
        resources={
            "document_store": DocumentStoreResource.from_settings(settings),
            "extraction_agent": ExtractionAgentResource.from_settings(settings.extraction),
        },
        # Steps run inside the run's process: a run is already one process per batch of
        # documents, and concurrency lives inside the extraction step.
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings.from_env())
