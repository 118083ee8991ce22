"""The code location: one `Definitions` wiring defs/ together from the deployment settings."""

import dagster as dg

from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.intake_assets import source_document
from extraction_pipeline.defs.jobs import intake_job
from extraction_pipeline.defs.resources import DocumentStoreResource
from extraction_pipeline.defs.sensors import build_inbox_sensor


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[source_document],
        jobs=[intake_job],
        sensors=[build_inbox_sensor(settings, intake_job)],
        resources={
            "document_store": DocumentStoreResource(
                data_dir=str(settings.data_dir),
                max_pages=settings.pdf_limits.max_pages,
                max_bytes=settings.pdf_limits.max_bytes,
            )
        },
        # Steps run inside the run's process: a run is already one process per batch of
        # documents, and concurrency lives inside the extraction step.
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings.from_env())
