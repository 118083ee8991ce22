"""Jobs that sensors and schedules launch."""

import dagster as dg

from extraction_pipeline.defs.partitions import documents_partitions

intake_job = dg.define_asset_job(
    "intake_job",
    selection=dg.AssetSelection.assets("source_document", "extraction"),
    partitions_def=documents_partitions,
    description="Store, read and extract newly arrived documents; launched by the inbox sensor.",
)

# Unreadable documents run on their own: their failure must not skip their neighbours' extraction.
source_job = dg.define_asset_job(
    "source_job",
    selection=dg.AssetSelection.assets("source_document"),
    partitions_def=documents_partitions,
    description="Record unreadable documents (their source_document fails with the reason).",
)

extraction_job = dg.define_asset_job(
    "extraction_job",
    selection=dg.AssetSelection.assets("extraction"),
    partitions_def=documents_partitions,
    description="Extract documents again (their originals are stored); launched by the retry "
    "schedule.",
)
