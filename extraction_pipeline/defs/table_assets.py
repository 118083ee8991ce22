"""The Parquet tables under EXTRACTION_DATA_DIR/tables/, refreshed as documents complete."""

from collections.abc import Iterator

import dagster as dg

from extraction_pipeline.core.schemas import load_schema
from extraction_pipeline.core.tables import TableSet, read_cursor, refresh_tables, table_name
from extraction_pipeline.defs.document_assets import EXTRACTION_KEY
from extraction_pipeline.defs.metadata import column_schema, markdown_preview
from extraction_pipeline.defs.resources import DocumentStoreResource

# Fires on every new extraction outcome, success (a materialisation) or failure (a failed run:
# failures are observations, which do not count as updates), and does not wait for missing,
# failed or in-progress partitions: with a stream of documents some always are.
_NEW_OUTCOME = dg.AutomationCondition.any_deps_updated() | dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.execution_failed().newly_true()
)
TABLES_CONDITION = (
    (dg.AutomationCondition.newly_missing() | _NEW_OUTCOME).since_last_handled()
    & ~dg.AutomationCondition.in_progress()
).with_label("refresh on every new extraction outcome")
CHANGES_PAGE = 5000

DESCRIPTIONS = {
    "documents": "One row per extracted document: status, model, tokens, cost, attempts, "
    "review reason. documents.parquet.",
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
            deps=[EXTRACTION_KEY],
            description=DESCRIPTIONS[layout.name],
            group_name="tables",
            kinds={"parquet", "pandas"},
            automation_condition=TABLES_CONDITION,
            metadata={
                "dagster/column_schema": column_schema(layout),
                "dagster/column_lineage": _lineage(layout.column_names),
                "path": f"EXTRACTION_DATA_DIR/{table_name(layout.name)}",
            },
        )
        for layout in tables.all
    ]

    @dg.multi_asset(specs=specs, can_subset=False, name="tables", group_name="tables")
    def refresh(
        context: dg.AssetExecutionContext, document_store: DocumentStoreResource
    ) -> Iterator[dg.MaterializeResult]:
        """Replace the rows of every document whose extraction outcome changed since the last
        refresh; the change feed is the event log of `extraction` after a stored storage id."""
        store = document_store.object_store()
        cursor = read_cursor(store)
        paid, new_cursor = _changed_documents(context.instance, cursor)
        records = document_store.records()
        outcomes = [o for o in (records.load(key) for key in paid) if o is not None]
        summaries = refresh_tables(store, tables, outcomes, paid=paid, cursor=new_cursor)
        context.log.info(f"{len(outcomes)} changed documents since storage id {cursor}")
        for summary in summaries:
            metadata: dict = {
                "dagster/row_count": summary.row_count,
                "rows_changed": summary.rows_changed,
                "documents_changed": len(outcomes),
                "path": dg.MetadataValue.path(store.uri(table_name(summary.name))),
                "preview": dg.MetadataValue.md(markdown_preview(summary.preview)),
            }
            if summary.cost_usd_total is not None:
                metadata["cost_usd_total"] = dg.MetadataValue.float(summary.cost_usd_total)
            yield dg.MaterializeResult(asset_key=summary.name, metadata=metadata)

    return refresh


def _lineage(columns: list[str]) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            name: [dg.TableColumnDep(asset_key=EXTRACTION_KEY, column_name=name)]
            for name in columns
        }
    )


def _changed_documents(instance: dg.DagsterInstance, after: int) -> tuple[dict[str, float], int]:
    """Partitions of `extraction` with an outcome (success or failure) after storage id `after`,
    each with what those outcomes cost (reused results cost nothing), and the storage id to
    continue from."""
    paid: dict[str, float] = {}
    latest = after
    record_filter = dg.AssetRecordsFilter(asset_key=EXTRACTION_KEY, after_storage_id=after)
    for fetch in (instance.fetch_materializations, instance.fetch_observations):
        page_cursor = None
        while True:
            result = fetch(record_filter, limit=CHANGES_PAGE, cursor=page_cursor, ascending=True)
            for record in result.records:
                if record.partition_key is not None:
                    paid[record.partition_key] = paid.get(record.partition_key, 0.0) + _cost(record)
                latest = max(latest, record.storage_id)
            if not result.has_more:
                break
            page_cursor = result.cursor
    return paid, latest


def _cost(record: dg.EventLogRecord) -> float:
    event = record.event_log_entry.dagster_event
    data = event.event_specific_data if event else None
    outcome = getattr(data, "materialization", None) or getattr(data, "asset_observation", None)
    metadata = outcome.metadata if outcome is not None else {}
    cache_hit = metadata.get("cache_hit")
    cost = metadata.get("cost_usd")
    if cost is None or (cache_hit is not None and cache_hit.value):
        return 0.0
    return float(cost.value or 0.0)
