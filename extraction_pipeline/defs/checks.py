"""Asset checks on the extracted invoices (required fields, totals, dates), evaluated on every
refresh of the tables: by the `tables` asset, and by each document run that refreshes them."""

from collections.abc import Iterator

import dagster as dg

from extraction_pipeline.core.extraction.validation import Check
from extraction_pipeline.core.tables.checks import failing_documents
from extraction_pipeline.defs.resources import DocumentStoreResource
from extraction_pipeline.instance.names import RECORDS_KEY

CHECK_DESCRIPTIONS = {
    Check.REQUIRED_FIELDS: "Every extracted invoice has number, date, vendor, currency, total.",
    Check.TOTALS_ADD_UP: "Line items sum to the subtotal, and subtotal plus tax to the total "
    "(tolerance 0.01 or 0.1%).",
    Check.DATES_PARSE: "Dates are ISO dates in a plausible range, and due after issue.",
}
INVOICE_CHECK_SPECS = [
    dg.AssetCheckSpec(check.value, asset=RECORDS_KEY, description=description)
    for check, description in CHECK_DESCRIPTIONS.items()
]
EXAMPLES = 20


def invoice_check_results(document_store: DocumentStoreResource) -> Iterator[dg.AssetCheckResult]:
    """The checks' results, for the step that declares them (the `tables` asset)."""
    for check, failing in failing_documents(document_store.object_store()).items():
        yield dg.AssetCheckResult(
            check_name=check.value,
            asset_key=RECORDS_KEY,
            passed=not failing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=_metadata(failing),
        )


def invoice_check_evaluations(
    document_store: DocumentStoreResource,
) -> Iterator[dg.AssetCheckEvaluation]:
    """The same results reported from another step (a document run that refreshed the tables);
    the UI counts them for the invoices materialisation of the same run."""
    for check, failing in failing_documents(document_store.object_store()).items():
        yield dg.AssetCheckEvaluation(
            asset_key=RECORDS_KEY,
            check_name=check.value,
            passed=not failing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=_metadata(failing),
        )


def _metadata(failing: list[str]) -> dict[str, dg.MetadataValue]:
    return {
        "failing_documents": dg.MetadataValue.int(len(failing)),
        "examples": dg.MetadataValue.json(failing[:EXAMPLES]),
    }
