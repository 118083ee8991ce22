"""The Parquet tables under EXTRACTION_DATA_DIR/tables/, refreshed as documents complete."""

from collections.abc import Iterator

import dagster as dg

from extraction_pipeline.core.extraction.schemas import load_schema
from extraction_pipeline.core.tables.layout import TableSet, table_path
from extraction_pipeline.defs.checks import INVOICE_CHECK_SPECS, invoice_check_results
from extraction_pipeline.defs.metadata import column_schema
from extraction_pipeline.defs.resources import DocumentStoreResource
from extraction_pipeline.defs.table_refresh import (
    TABLES_CODE_VERSION,
    refresh_from_change_feed,
    tables_lock,
)
from extraction_pipeline.instance.names import EXTRACTION_KEY, SOURCE_KEY

DESCRIPTIONS = {
    "documents": "One row per document with an outcome: extracted, needs_review or failed "
    "(unreadable ones included, with the reason in error_kind and error_message); model, "
    "tokens, cost, attempts, review reason. documents.parquet.",
    "invoices": "One row per extracted record: the schema's top-level fields. invoices.parquet.",
    "invoice_line_items": "One row per line item, keyed by document_key and line_number. "
    "invoice_line_items.parquet.",
    "review_queue": "Documents a person should look at: a failed check or a refused, truncated "
    "or unparseable answer, with the reason. review_queue.parquet.",
}


def build_table_assets(schema_ref: str) -> dg.AssetsDefinition:
    tables = TableSet.for_schema(load_schema(schema_ref))
    specs = [
        dg.AssetSpec(
            layout.name,
            deps=[SOURCE_KEY, EXTRACTION_KEY],
            description=DESCRIPTIONS[layout.name],
            group_name="tables",
            kinds={"parquet", "pandas"},
            code_version=TABLES_CODE_VERSION,
            metadata={
                "dagster/column_schema": column_schema(layout),
                "dagster/column_lineage": _lineage(layout.column_names),
                "path": f"EXTRACTION_DATA_DIR/{table_path(layout.name)}",
            },
        )
        for layout in tables.all
    ]

    @dg.multi_asset(
        specs=specs,
        check_specs=INVOICE_CHECK_SPECS,
        can_subset=False,
        name="tables",
        group_name="tables",
    )
    def refresh(
        context: dg.AssetExecutionContext, document_store: DocumentStoreResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Replace the rows of every document whose outcome changed since the last refresh
        (every run that records outcomes also does this at its end; this catches up after runs
        that could not, e.g. a crashed one), then evaluate the invoice checks."""
        with tables_lock(document_store):  # until reported: see table_refresh
            for table, metadata in refresh_from_change_feed(
                context.instance, document_store, tables
            ):
                yield dg.MaterializeResult(asset_key=table, metadata=metadata)
            yield from invoice_check_results(document_store)

    return refresh


def _lineage(columns: list[str]) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            name: [dg.TableColumnDep(asset_key=EXTRACTION_KEY, column_name=name)]
            for name in columns
        }
    )
