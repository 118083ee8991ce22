"""The business checks as table checks: which documents of the review queue fail each one."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from extraction_pipeline.core.extraction.validation import Check
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.core.tables.layout import REVIEW_QUEUE_TABLE, table_path


def failing_documents(store: ObjectStore) -> dict[Check, list[str]]:
    """Per check, the documents whose latest outcome failed it (in review-queue order)."""
    try:
        data = store.get(table_path(REVIEW_QUEUE_TABLE))
    except FileNotFoundError:
        rows: list[dict] = []
    else:
        columns = ["document_key", "checks_failed"]
        rows = pq.read_table(io.BytesIO(data), columns=columns).to_pylist()
    failing: dict[Check, list[str]] = {check: [] for check in Check}
    for row in rows:
        failed = {name.strip() for name in (row["checks_failed"] or "").split(",")}
        for check in Check:
            if check.value in failed:
                failing[check].append(row["document_key"])
    return failing
