"""Bringing the Parquet tables up to date from the event log of document outcomes (the change
feed): `extraction` materialisations and failures, and `source_document` failures (an
unreadable document's only outcome).

Called by every run that recorded outcomes, at its end, and by the `tables` asset, each under
`tables_lock`, held until the run has reported the refresh: two refreshes never rewrite the files
at once, and two runs' reports never interleave, so the latest `tables` materialisation is the
latest refresh and its checks are the ones evaluated on it (runs extract side by side).
"""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from extraction_pipeline.core.tables.layout import TableSet, table_path
from extraction_pipeline.core.tables.refresh import (
    FeedPosition,
    TableSummary,
    read_position,
    refresh_tables,
)
from extraction_pipeline.defs.checks import invoice_check_evaluations
from extraction_pipeline.defs.metadata import markdown_preview
from extraction_pipeline.defs.resources import DocumentStoreResource
from extraction_pipeline.instance.dagster_compat import provenance_tags
from extraction_pipeline.instance.names import EXTRACTION_KEY, SOURCE_KEY
from extraction_pipeline.instance.outcomes import read_outcome

CHANGES_PAGE = 5000
# The code version of the tables: bump it when a change to the code rewrites them differently.
TABLES_CODE_VERSION = "1"
# Outcomes that arrive while a refresh runs are taken in further passes, so a burst that ends
# while the tables are being written does not leave its last documents behind.
MAX_PASSES = 5


def refresh_from_change_feed(
    instance: dg.DagsterInstance, document_store: DocumentStoreResource, tables: TableSet
) -> list[tuple[str, dict[str, Any]]]:
    """Replace the rows of every document whose outcome changed since the last refresh; return
    (table name, materialisation metadata) per table. Call under `tables_lock`."""
    store = document_store.object_store()
    records = document_store.records()
    position = read_position(store)
    changed = 0
    summaries: list[TableSummary] = []
    for _ in range(MAX_PASSES):
        paid, position_after = changed_documents(instance, position)
        if summaries and not paid:
            break
        outcomes = [o for o in (records.load(key) for key in paid) if o is not None]
        summaries = refresh_tables(store, tables, outcomes, paid, position_after)
        position, changed = position_after, changed + len(outcomes)
    results = []
    for summary in summaries:
        metadata: dict[str, Any] = {
            "dagster/row_count": summary.row_count,
            "rows_changed": summary.rows_changed,
            "documents_changed": changed,
            "feed_storage_id": position.storage_id,
            "path": dg.MetadataValue.path(store.uri(table_path(summary.name))),
            "preview": dg.MetadataValue.md(markdown_preview(summary.preview)),
        }
        if summary.cost_usd_total is not None:
            metadata["cost_usd_total"] = dg.MetadataValue.float(summary.cost_usd_total)
        results.append((summary.name, metadata))
    return results


@contextlib.contextmanager
def tables_lock(document_store: DocumentStoreResource) -> Iterator[None]:
    with document_store.object_store().lock("tables"):
        yield


def refresh_in_run(
    instance: dg.DagsterInstance, document_store: DocumentStoreResource, tables: TableSet
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """The tables brought up to date from inside a document run, reported as the `tables` asset
    reports its own: each materialisation with its data provenance (the document events it was
    read up to, so the UI does not call the tables "Unsynced"), then the invoice checks."""
    with tables_lock(document_store):
        # Read before the feed: a document arriving meanwhile may be missing from the tables,
        # and then the tables show as behind it, which is true.
        inputs = {key: _latest_storage_id(instance, key) for key in (SOURCE_KEY, EXTRACTION_KEY)}
        refreshed = refresh_from_change_feed(instance, document_store, tables)
        for table, metadata in refreshed:
            version = f"feed-{metadata['feed_storage_id']}"
            yield dg.AssetMaterialization(
                asset_key=table,
                metadata=metadata,
                tags=provenance_tags(TABLES_CODE_VERSION, version, inputs),
            )
        if refreshed:
            yield from invoice_check_evaluations(document_store)


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1)
    return records.records[0].storage_id if records.records else None


def changed_documents(
    instance: dg.DagsterInstance, position: FeedPosition
) -> tuple[dict[str, float], FeedPosition]:
    """Documents with an outcome not taken yet (an extraction, an extraction failure, or a source
    failure: unreadable), each with what those outcomes cost (reused results and unreadable
    documents cost nothing), and the position after them."""
    paid: dict[str, float] = {}
    taken: list[int] = []
    for fetch, asset_key in outcome_feeds(instance):
        record_filter = dg.AssetRecordsFilter(
            asset_key=asset_key, after_storage_id=position.read_after
        )
        page_cursor = None
        while True:
            result = fetch(record_filter, limit=CHANGES_PAGE, cursor=page_cursor, ascending=True)
            for record in result.records:
                if not position.is_new(record.storage_id):
                    continue
                taken.append(record.storage_id)
                outcome = read_outcome(record)
                if outcome is not None and outcome.is_submission:
                    continue  # handed to a batch: no outcome yet
                if record.partition_key is not None:
                    paid[record.partition_key] = paid.get(record.partition_key, 0.0) + _cost(record)
            if not result.has_more:
                break
            page_cursor = result.cursor
    return paid, position.advance(taken)


def outcome_feeds(
    instance: dg.DagsterInstance,
) -> tuple[tuple[Callable[..., dg.EventRecordsResult], dg.AssetKey], ...]:
    """Where document outcomes are in the event log: `extraction` materialisations and failure
    observations, and `source_document` failure observations (an unreadable document's only
    outcome; source materialisations are not outcomes, the extraction that follows is)."""
    return (
        (instance.fetch_materializations, EXTRACTION_KEY),
        (instance.fetch_observations, EXTRACTION_KEY),
        (instance.fetch_observations, SOURCE_KEY),
    )


def _cost(record: dg.EventLogRecord) -> float:
    outcome = read_outcome(record)
    return 0.0 if outcome is None else outcome.paid_usd
