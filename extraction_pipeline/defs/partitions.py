"""One partition per document: the key is `<file-name slug>-<12 hex of its SHA-256>`."""

import dagster as dg

DOCUMENTS_PARTITIONS_NAME = "documents"

documents_partitions = dg.DynamicPartitionsDefinition(name=DOCUMENTS_PARTITIONS_NAME)

# Runs over many documents (UI backfills, sensor batches) take at most this many per run: large
# enough to amortise a run's start-up, small enough that a failed run repeats little.
MAX_DOCUMENTS_PER_RUN = 100
DOCUMENTS_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(
    max_partitions_per_run=MAX_DOCUMENTS_PER_RUN
)
