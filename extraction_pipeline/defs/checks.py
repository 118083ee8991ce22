"""Asset checks on the extracted invoices: required fields, totals, dates."""

import io
from collections.abc import Iterator

import dagster as dg
import pyarrow.parquet as pq

from extraction_pipeline.core.extraction.validation import Check
from extraction_pipeline.core.tables.layout import RECORDS_TABLE, REVIEW_QUEUE_TABLE, table_path
from extraction_pipeline.defs.resources import DocumentStoreResource

CHECK_DESCRIPTIONS = {
    Check.REQUIRED_FIELDS: "Every extracted invoice has number, date, vendor, currency, total.",
    Check.TOTALS_ADD_UP: "Line items sum to the subtotal, and subtotal plus tax to the total "
    "(tolerance 0.01 or 0.1%).",
    Check.DATES_PARSE: "Dates are ISO dates in a plausible range, and due after issue.",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(check.value, asset=RECORDS_TABLE, description=description)
        for check, description in CHECK_DESCRIPTIONS.items()
    ],
    can_subset=False,
)
def invoice_checks(document_store: DocumentStoreResource) -> Iterator[dg.AssetCheckResult]:
    """Counts the documents failing each check (they are listed in review_queue)."""
    store = document_store.object_store()
    try:
        table = pq.read_table(
            io.BytesIO(store.get(table_path(REVIEW_QUEUE_TABLE))),
            columns=["document_key", "checks_failed"],
        )
    except FileNotFoundError:
        rows: list[dict] = []
    else:
        rows = table.to_pylist()
    for check in CHECK_DESCRIPTIONS:
        failing = [r["document_key"] for r in rows if check.value in (r["checks_failed"] or "")]
        yield dg.AssetCheckResult(
            check_name=check.value,
            asset_key=dg.AssetKey(RECORDS_TABLE),
            passed=not failing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "failing_documents": len(failing),
                "examples": dg.MetadataValue.json(failing[:20]),
            },
        )
