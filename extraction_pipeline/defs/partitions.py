"""One partition per document: the key is `<file-name slug>-<12 hex of its SHA-256>`."""

import dagster as dg

DOCUMENTS_PARTITIONS_NAME = "documents"

documents_partitions = dg.DynamicPartitionsDefinition(name=DOCUMENTS_PARTITIONS_NAME)
