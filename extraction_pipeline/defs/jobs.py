"""Jobs that sensors and schedules launch."""

import dagster as dg

from extraction_pipeline.defs.intake_assets import source_document
from extraction_pipeline.defs.partitions import documents_partitions

intake_job = dg.define_asset_job(
    "intake_job",
    selection=dg.AssetSelection.assets(source_document),
    partitions_def=documents_partitions,
    description="Materialise newly arrived documents; launched by the inbox sensor.",
)
