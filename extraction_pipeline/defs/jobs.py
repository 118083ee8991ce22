"""Jobs that sensors and schedules launch."""

import dagster as dg

intake_job = dg.define_asset_job(
    "intake_job",
    selection=dg.AssetSelection.assets("source_document", "extraction"),
    description="Store, read and extract newly arrived documents; launched by the inbox sensor.",
)

# Unreadable documents run on their own: their failure must not skip their neighbours' extraction.
source_job = dg.define_asset_job(
    "source_job",
    selection=dg.AssetSelection.assets("source_document"),
    description="Record unreadable documents (their source_document fails with the reason).",
)

extraction_job = dg.define_asset_job(
    "extraction_job",
    selection=dg.AssetSelection.assets("extraction"),
    description="Extract documents again (their originals are stored); launched by the retry "
    "schedule.",
)
