"""Refreshing the Parquet tables from the documents whose outcome changed.

A refresh reads only the changed documents' outcomes and replaces their rows in each table
(delete by `document_key`, then append), so its cost grows with what changed; the files are
rewritten whole, which at 100k rows is a fraction of a second.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extraction_pipeline.core.extraction.records import ExtractionRecord
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.core.tables.layout import (
    DOCUMENTS,
    Column,
    TableLayout,
    TableSet,
    table_path,
)

# The change-feed position is stored in documents.parquet's own metadata, and documents.parquet
# is written last: a refresh that dies half-way is repeated whole, and a repeat is harmless.
POSITION_METADATA_KEY = b"extraction_feed_position"
# Events are numbered when inserted but become visible when committed, so with several runs
# writing at once a lower number can appear after a higher one was read. The feed therefore
# re-reads this many numbers back and skips the ones it already took.
FEED_WINDOW = 1000


@dataclass(frozen=True)
class FeedPosition:
    """How far the tables have read the change feed: the highest storage id taken, and the ids
    taken within FEED_WINDOW below it."""

    storage_id: int = 0
    recent: frozenset[int] = frozenset()

    @property
    def read_after(self) -> int:
        return max(0, self.storage_id - FEED_WINDOW)

    def is_new(self, storage_id: int) -> bool:
        return storage_id > self.read_after and storage_id not in self.recent

    def advance(self, taken: Iterable[int]) -> FeedPosition:
        ids = set(self.recent) | set(taken)
        top = max(ids, default=self.storage_id)
        top = max(top, self.storage_id)
        return FeedPosition(top, frozenset(i for i in ids if i > top - FEED_WINDOW))

    def encode(self) -> bytes:
        return json.dumps({"storage_id": self.storage_id, "recent": sorted(self.recent)}).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> FeedPosition:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(int(data["storage_id"]), frozenset(int(i) for i in data["recent"]))


@dataclass(frozen=True)
class TableSummary:
    name: str
    row_count: int
    rows_changed: int
    preview: list[dict[str, Any]]
    cost_usd_total: float | None = None


def refresh_tables(
    store: ObjectStore,
    tables: TableSet,
    outcomes: Sequence[ExtractionRecord],
    paid: Mapping[str, float] | None = None,
    position: FeedPosition | None = None,
) -> list[TableSummary]:
    """Replace the rows of `outcomes`' documents in every table; return what each holds now.

    `paid` adds, per document, what the attempts since the last refresh cost (failed ones
    included) to its `cost_usd_total`; `position` is the change-feed position to store.
    """
    changed = [outcome.document_key for outcome in outcomes]
    documents = read_table(store, tables.documents)
    totals = _previous_totals(documents, changed)
    paid = paid or {}
    rows = {
        tables.documents.name: [
            {
                **_document_row(o),
                "cost_usd_total": round(
                    totals.get(o.document_key, 0.0) + paid.get(o.document_key, 0.0), 8
                ),
            }
            for o in outcomes
        ],
        tables.records.name: [_record_row(o, tables) for o in outcomes if o.record is not None],
        tables.lines.name: [row for o in outcomes for row in _line_rows(o, tables)],
        tables.review_queue.name: [_review_row(o) for o in outcomes if _needs_review(o)],
    }
    summaries: dict[str, TableSummary] = {}
    for layout in (tables.records, tables.lines, tables.review_queue, tables.documents):
        previous = documents if layout is tables.documents else read_table(store, layout)
        table = _merge(previous, changed, rows[layout.name], layout)
        cost = None
        if layout is tables.documents:
            stored = position if position is not None else read_position(store)
            table = table.replace_schema_metadata({POSITION_METADATA_KEY: stored.encode()})
            cost = round(float(pc.sum(table["cost_usd_total"]).as_py() or 0.0), 6)
        store.put(table_path(layout.name), _to_parquet(table))
        summaries[layout.name] = TableSummary(
            name=layout.name,
            row_count=table.num_rows,
            rows_changed=len(rows[layout.name]),
            preview=table.slice(max(0, table.num_rows - 5)).to_pylist(),
            cost_usd_total=cost,
        )
    return [summaries[layout.name] for layout in tables.all]


def read_position(store: ObjectStore) -> FeedPosition:
    """The change-feed position of the last complete refresh (the start before the first)."""
    try:
        data = store.get(table_path(DOCUMENTS.name))
    except FileNotFoundError:
        return FeedPosition()
    metadata = pq.read_schema(io.BytesIO(data)).metadata or {}
    return FeedPosition.decode(metadata.get(POSITION_METADATA_KEY))


def _previous_totals(documents: pa.Table, keys: Sequence[str]) -> dict[str, float]:
    if not documents.num_rows or not keys:
        return {}
    mask = pc.is_in(documents["document_key"], value_set=pa.array(list(set(keys))))
    subset = documents.filter(mask).select(["document_key", "cost_usd_total"]).to_pylist()
    return {row["document_key"]: row["cost_usd_total"] or 0.0 for row in subset}


def read_table(store: ObjectStore, layout: TableLayout) -> pa.Table:
    """The stored table, or an empty one with the layout's columns."""
    try:
        data = store.get(table_path(layout.name))
    except FileNotFoundError:
        return layout.arrow_schema.empty_table()
    table = pq.read_table(io.BytesIO(data))
    if table.schema != layout.arrow_schema:
        # The schema changed (another extraction schema, a new column): rebuild from what fits.
        columns = {name: table[name] for name in table.column_names if name in layout.column_names}
        table = pa.table(
            {n: columns.get(n, pa.nulls(table.num_rows)) for n in layout.column_names}
        ).cast(layout.arrow_schema, safe=False)
    return table


def _merge(
    table: pa.Table, changed: Sequence[str], rows: list[dict[str, Any]], layout: TableLayout
) -> pa.Table:
    if changed and table.num_rows:
        keep = pc.invert(pc.is_in(table["document_key"], value_set=pa.array(list(set(changed)))))
        table = table.filter(keep)
    if rows:
        table = pa.concat_tables([table, pa.Table.from_pylist(rows, schema=layout.arrow_schema)])
    return table


def _to_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _document_row(outcome: ExtractionRecord) -> dict[str, Any]:
    call = outcome.call
    return {
        "document_key": outcome.document_key,
        "file_name": outcome.file_name,
        "sha256": outcome.sha256,
        "pages": outcome.pages,
        "status": outcome.status,
        "model": call.model if call else None,
        "input_tokens": call.input_tokens if call else None,
        "cached_input_tokens": call.cached_input_tokens if call else None,
        "output_tokens": call.output_tokens if call else None,
        # A reused result was paid for once, by the outcome that first produced it.
        "cost_usd": 0.0 if outcome.cache_hit else (call.cost_usd if call else None),
        "attempts": call.attempts if call else 0,
        "latency_seconds": call.latency_seconds if call else None,
        "cache_hit": outcome.cache_hit,
        "extracted_at": outcome.extracted_at,
        "review_reason": outcome.review_reason,
        "error_kind": outcome.error_kind,
        "error_message": outcome.error_message,
        "run_id": outcome.run_id,
    }


def _record_row(outcome: ExtractionRecord, tables: TableSet) -> dict[str, Any]:
    record = outcome.record or {}
    row: dict[str, Any] = {"document_key": outcome.document_key}
    for column in tables.records.columns[1:]:
        row[column.name] = _value(record.get(column.name), column)
    return row


def _line_rows(outcome: ExtractionRecord, tables: TableSet) -> Iterable[dict[str, Any]]:
    if outcome.record is None or tables.lines_field is None:
        return []
    rows = []
    for number, item in enumerate(outcome.record.get(tables.lines_field) or [], start=1):
        row: dict[str, Any] = {"document_key": outcome.document_key, "line_number": number}
        for column in tables.lines.columns[2:]:
            row[column.name] = _value(item.get(column.name), column)
        rows.append(row)
    return rows


def _needs_review(outcome: ExtractionRecord) -> bool:
    return outcome.review_reason is not None


def _review_row(outcome: ExtractionRecord) -> dict[str, Any]:
    return {
        "document_key": outcome.document_key,
        "file_name": outcome.file_name,
        "status": outcome.status,
        "checks_failed": ", ".join(sorted({f.check for f in outcome.findings})) or None,
        "review_reason": outcome.review_reason,
        "error_kind": outcome.error_kind,
        "extracted_at": outcome.extracted_at,
    }


def _value(value: Any, column: Column) -> Any:
    """A record value as the column stores it; a value of the wrong shape becomes null."""
    if value is None:
        return None
    if column.json_encoded:
        return json.dumps(value, sort_keys=True)
    if pa.types.is_date32(column.type) and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    if pa.types.is_timestamp(column.type) and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return value
