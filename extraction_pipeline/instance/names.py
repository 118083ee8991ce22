"""The names by which the wiring writes to Dagster's storage and the queries read it back: asset
keys, the documents partitions, and run tags. One module, so writers and readers cannot drift."""

import dagster as dg

from extraction_pipeline.core.tables.layout import RECORDS_TABLE, TABLE_NAMES

SOURCE_KEY = dg.AssetKey("source_document")
EXTRACTION_KEY = dg.AssetKey("extraction")
DOCUMENT_KEYS = (SOURCE_KEY, EXTRACTION_KEY)
TABLE_KEYS = tuple(dg.AssetKey(name) for name in TABLE_NAMES)
RECORDS_KEY = dg.AssetKey(RECORDS_TABLE)
DEAD_LETTERS_KEY = dg.AssetKey("dead_letters")
# Batches submitted to the provider's Batch API and how they ended (observations).
MODEL_BATCHES_KEY = dg.AssetKey("model_batches")

# One partition per document: the key is `<file-name slug>-<12 hex of its SHA-256>`.
DOCUMENTS_PARTITIONS_NAME = "documents"
documents_partitions = dg.DynamicPartitionsDefinition(name=DOCUMENTS_PARTITIONS_NAME)

# Dagster's own tags: a run over one partition, or over a range of them in partition order.
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Dagster's run tag: retry this run even though a step failed (dagster.yaml retries crashes only).
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_NUMBER_TAG = "dagster/retry_number"
PARENT_RUN_TAG = "dagster/parent_run_id"

# Ours: who asked for a run (sensor, schedule name, ingest), and on which host its worker runs
# when that is not the code server's (ingest runs in the CLI's process).
TRIGGER_TAG = "extraction_pipeline/trigger"
# online or batch, for this run (else EXTRACTION_MODE); a UI launch can set it.
MODE_TAG = "extraction_pipeline/mode"
# A run that collects the answers of this batch (and which submission of its documents it was).
BATCH_TAG = "extraction_pipeline/batch_id"
BATCH_ATTEMPT_TAG = "extraction_pipeline/batch_attempt"
WORKER_HOST_TAG = "extraction_pipeline/worker_host"
# On each failure observation of `extraction`: whether retrying can mend it ("true"/"false").
# The event-log storage indexes it, so the retry schedule reads it without decoding events.
RETRYABLE_TAG = "extraction_pipeline/retryable"
