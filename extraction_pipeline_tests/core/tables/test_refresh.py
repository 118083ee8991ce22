"""Table layouts derived from the schema, and the Parquet refresh that replaces changed rows."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from extraction_pipeline.core.extraction.records import CallSummary, ExtractionRecord, FindingRecord
from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.core.tables.layout import (
    DOCUMENTS,
    REVIEW_QUEUE,
    TableSet,
    record_layouts,
    table_path,
)
from extraction_pipeline.core.tables.refresh import (
    TableSummary,
    read_table,
    refresh_tables,
)

EXTRACTED_AT = dt.datetime(2026, 2, 1, 12, 0, tzinfo=dt.UTC)


class Address(BaseModel):
    street: str | None = None
    city: str | None = None


class Shipment(BaseModel):
    """A user schema: a nested object, a list of scalars, and no list of objects."""

    reference: str | None = None
    shipped_on: dt.date | None = None
    weight_kg: float | None = None
    pieces: int | None = None
    fragile: bool | None = None
    destination: Address | None = None
    tags: list[str] = []


class Stamped(BaseModel):
    reference: str | None = None
    received_at: dt.datetime | None = None


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path)


@pytest.fixture
def tables() -> TableSet:
    return TableSet.for_schema(Invoice)


def call(cost_usd: float | None = 0.0123, model: str = "gpt-4.1-mini") -> CallSummary:
    return CallSummary(
        model=model,
        api_mode="responses",
        input_mode="text",
        attempts=1,
        input_tokens=900,
        cached_input_tokens=0,
        output_tokens=150,
        cost_usd=cost_usd,
        latency_seconds=0.25,
        request_id="req_1",
        prompt_version="invoice-extract-v1",
        schema_name="Invoice",
        schema_fingerprint="abc",
        repaired=False,
    )


def invoice_record(number: str = "INV-1", lines: int = 2, **overrides: Any) -> dict[str, Any]:
    record = Invoice(
        invoice_number=number,
        invoice_date=dt.date(2026, 1, 31),
        due_date=dt.date(2026, 2, 28),
        vendor_name="Acme",
        customer_name="Globex",
        currency="EUR",
        subtotal=10.0 * lines,
        tax=0.0,
        total=10.0 * lines,
        line_items=[
            {"description": f"item {i}", "quantity": 1.0, "unit_price": 10.0, "amount": 10.0}
            for i in range(1, lines + 1)
        ],
    ).model_dump(mode="json")
    record.update(overrides)
    return record


def extracted(key: str, record: dict[str, Any] | None = None, **overrides: Any) -> ExtractionRecord:
    fields: dict[str, Any] = {
        "document_key": key,
        "file_name": f"{key}.pdf",
        "sha256": f"sha-{key}",
        "pages": 1,
        "status": "extracted",
        "record": record if record is not None else invoice_record(key.upper()),
        "call": call(),
        "extracted_at": EXTRACTED_AT,
        "run_id": "run-1",
    }
    fields.update(overrides)
    return ExtractionRecord(**fields)


def refused(key: str) -> ExtractionRecord:
    return ExtractionRecord(
        document_key=key,
        file_name=f"{key}.pdf",
        sha256=f"sha-{key}",
        pages=1,
        status="failed",
        call=call(cost_usd=0.001),
        error_kind="refused",
        error_message="refused: the model refused: cannot help",
        retryable=False,
        review_reason="refused: the model refused: cannot help",
        extracted_at=EXTRACTED_AT,
    )


def stored(store: LocalObjectStore, table: str) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get(table_path(table))))


def rows_by_key(store: LocalObjectStore, table: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in stored(store, table).to_pylist():
        grouped.setdefault(row["document_key"], []).append(row)
    return grouped


def test_invoice_layout_has_scalar_columns_and_a_line_table_from_line_items() -> None:
    layouts = record_layouts(Invoice, "invoices", "invoice_line_items")
    assert layouts.lines_field == "line_items"
    assert layouts.records.name == "invoices"
    assert layouts.records.arrow_schema == pa.schema(
        [
            ("document_key", pa.string()),
            ("invoice_number", pa.string()),
            ("invoice_date", pa.date32()),
            ("due_date", pa.date32()),
            ("vendor_name", pa.string()),
            ("customer_name", pa.string()),
            ("currency", pa.string()),
            ("subtotal", pa.float64()),
            ("tax", pa.float64()),
            ("total", pa.float64()),
        ]
    )
    assert layouts.lines.name == "invoice_line_items"
    assert layouts.lines.arrow_schema == pa.schema(
        [
            ("document_key", pa.string()),
            ("line_number", pa.int32()),
            ("description", pa.string()),
            ("quantity", pa.float64()),
            ("unit_price", pa.float64()),
            ("amount", pa.float64()),
        ]
    )
    assert not any(column.json_encoded for column in layouts.records.columns)
    total = next(c for c in layouts.records.columns if c.name == "total")
    assert total.description == "Amount due including tax."


def test_user_schema_nested_object_becomes_a_json_column_and_has_no_line_table() -> None:
    layouts = record_layouts(Shipment, "shipments", "shipment_lines")
    assert layouts.lines_field is None
    assert layouts.lines.column_names == ["document_key", "line_number"]
    assert layouts.records.arrow_schema == pa.schema(
        [
            ("document_key", pa.string()),
            ("reference", pa.string()),
            ("shipped_on", pa.date32()),
            ("weight_kg", pa.float64()),
            ("pieces", pa.int64()),
            ("fragile", pa.bool_()),
            ("destination", pa.string()),
            ("tags", pa.string()),
        ]
    )
    encoded = {column.name for column in layouts.records.columns if column.json_encoded}
    assert encoded == {"destination", "tags"}


def test_only_the_first_list_of_objects_becomes_the_line_table() -> None:
    class TwoLists(BaseModel):
        first: list[Address] = []
        second: list[Address] | None = None

    layouts = record_layouts(TwoLists, "records", "lines")
    assert layouts.lines_field == "first"
    assert layouts.lines.column_names == ["document_key", "line_number", "street", "city"]
    assert layouts.records.column_names == ["document_key", "second"]
    assert layouts.records.columns[1].json_encoded


def test_first_refresh_writes_four_parquet_files_with_a_row_per_document_and_line(
    store: LocalObjectStore, tables: TableSet
) -> None:
    outcomes = [
        extracted("doc-a", invoice_record(lines=2)),
        extracted("doc-b", invoice_record(lines=3)),
    ]
    summaries = refresh_tables(store, tables, outcomes, paid={"doc-a": 0.0123, "doc-b": 0.0123})

    assert sorted(store.list("tables")) == [
        "tables/documents.parquet",
        "tables/invoice_line_items.parquet",
        "tables/invoices.parquet",
        "tables/review_queue.parquet",
    ]
    counts = {name: stored(store, name).num_rows for name in (layout.name for layout in tables.all)}
    assert counts == {"documents": 2, "invoices": 2, "invoice_line_items": 5, "review_queue": 0}
    assert [(s.name, s.row_count, s.rows_changed) for s in summaries] == [
        ("documents", 2, 2),
        ("invoices", 2, 2),
        ("invoice_line_items", 5, 5),
        ("review_queue", 0, 0),
    ]
    assert summaries[0].cost_usd_total == pytest.approx(0.0246)
    for layout in tables.all:
        assert stored(store, layout.name).schema == layout.arrow_schema


def test_record_and_line_rows_carry_the_extracted_values(
    store: LocalObjectStore, tables: TableSet
) -> None:
    refresh_tables(store, tables, [extracted("doc-a", invoice_record("INV-9", lines=2))])
    (invoice,) = stored(store, "invoices").to_pylist()
    assert invoice == {
        "document_key": "doc-a",
        "invoice_number": "INV-9",
        "invoice_date": dt.date(2026, 1, 31),
        "due_date": dt.date(2026, 2, 28),
        "vendor_name": "Acme",
        "customer_name": "Globex",
        "currency": "EUR",
        "subtotal": 20.0,
        "tax": 0.0,
        "total": 20.0,
    }
    lines = stored(store, "invoice_line_items").to_pylist()
    assert [(r["document_key"], r["line_number"], r["description"]) for r in lines] == [
        ("doc-a", 1, "item 1"),
        ("doc-a", 2, "item 2"),
    ]
    (document,) = stored(store, "documents").to_pylist()
    assert document["status"] == "extracted"
    assert document["cost_usd"] == pytest.approx(0.0123)
    assert document["input_tokens"] == 900
    assert document["attempts"] == 1
    assert document["extracted_at"] == EXTRACTED_AT
    assert document["run_id"] == "run-1"


def test_second_refresh_replaces_the_changed_documents_rows_and_keeps_the_others(
    store: LocalObjectStore, tables: TableSet
) -> None:
    refresh_tables(
        store,
        tables,
        [
            extracted("doc-a", invoice_record("A-1", lines=3)),
            extracted("doc-b", invoice_record("B-1", lines=2)),
        ],
    )
    changed = extracted(
        "doc-a",
        invoice_record("A-2", lines=1, total=99.0),
        status="needs_review",
        findings=[FindingRecord(check="totals_add_up", message="total is 99.00")],
        review_reason="total is 99.00",
        run_id="run-2",
    )
    summaries = refresh_tables(store, tables, [changed])

    documents = rows_by_key(store, "documents")
    assert {key: len(rows) for key, rows in documents.items()} == {"doc-a": 1, "doc-b": 1}
    assert documents["doc-a"][0]["status"] == "needs_review"
    assert documents["doc-a"][0]["run_id"] == "run-2"
    assert documents["doc-b"][0]["run_id"] == "run-1"

    invoices = rows_by_key(store, "invoices")
    assert [row["invoice_number"] for row in invoices["doc-a"]] == ["A-2"]
    assert [row["invoice_number"] for row in invoices["doc-b"]] == ["B-1"]

    lines = rows_by_key(store, "invoice_line_items")
    assert [row["line_number"] for row in lines["doc-a"]] == [1]
    assert [row["line_number"] for row in lines["doc-b"]] == [1, 2]

    review = rows_by_key(store, "review_queue")
    assert list(review) == ["doc-a"]
    assert review["doc-a"][0]["checks_failed"] == "totals_add_up"

    assert [(s.name, s.row_count, s.rows_changed) for s in summaries] == [
        ("documents", 2, 1),
        ("invoices", 2, 1),
        ("invoice_line_items", 3, 1),
        ("review_queue", 1, 1),
    ]


def test_document_that_left_review_is_removed_from_the_review_queue(
    store: LocalObjectStore, tables: TableSet
) -> None:
    refresh_tables(store, tables, [refused("doc-a"), extracted("doc-b")])
    assert list(rows_by_key(store, "review_queue")) == ["doc-a"]
    refresh_tables(store, tables, [extracted("doc-a")])
    assert stored(store, "review_queue").num_rows == 0
    assert sorted(rows_by_key(store, "invoices")) == ["doc-a", "doc-b"]


def test_refresh_with_the_same_outcomes_again_does_not_duplicate_rows(
    store: LocalObjectStore, tables: TableSet
) -> None:
    outcomes = [extracted("doc-a"), refused("doc-b")]
    refresh_tables(store, tables, outcomes)
    refresh_tables(store, tables, outcomes)
    counts = {layout.name: stored(store, layout.name).num_rows for layout in tables.all}
    assert counts == {"documents": 2, "invoices": 1, "invoice_line_items": 2, "review_queue": 1}


def test_failed_outcome_is_in_documents_and_review_queue_but_not_invoices(
    store: LocalObjectStore, tables: TableSet
) -> None:
    refresh_tables(store, tables, [refused("doc-x")])

    (document,) = stored(store, "documents").to_pylist()
    assert document["status"] == "failed"
    assert document["error_kind"] == "refused"
    assert document["review_reason"] == "refused: the model refused: cannot help"
    assert document["cost_usd"] == pytest.approx(0.001)
    (review,) = stored(store, "review_queue").to_pylist()
    assert review == {
        "document_key": "doc-x",
        "file_name": "doc-x.pdf",
        "status": "failed",
        "checks_failed": None,
        "review_reason": "refused: the model refused: cannot help",
        "error_kind": "refused",
        "extracted_at": EXTRACTED_AT,
    }
    assert stored(store, "invoices").num_rows == 0
    assert stored(store, "invoice_line_items").num_rows == 0


def test_failure_without_a_call_has_null_usage_and_zero_attempts(
    store: LocalObjectStore, tables: TableSet
) -> None:
    outcome = ExtractionRecord(
        document_key="ghost",
        file_name="",
        sha256="",
        pages=None,
        status="failed",
        error_kind="not_registered",
        error_message="no registration for ghost",
        extracted_at=EXTRACTED_AT,
    )
    (summary, *_) = refresh_tables(store, tables, [outcome])
    (document,) = stored(store, "documents").to_pylist()
    assert document["attempts"] == 0
    assert document["cost_usd"] is None
    assert document["model"] is None
    assert stored(store, "review_queue").num_rows == 0
    assert summary.cost_usd_total == 0.0


def test_cache_hit_rows_cost_nothing(store: LocalObjectStore, tables: TableSet) -> None:
    paid = extracted("doc-a", call=call(cost_usd=0.05))
    reused = extracted("doc-b", call=call(cost_usd=0.05), cache_hit=True)
    summaries = refresh_tables(store, tables, [paid, reused], paid={"doc-a": 0.05})
    costs = {key: rows[0]["cost_usd"] for key, rows in rows_by_key(store, "documents").items()}
    hits = {key: rows[0]["cache_hit"] for key, rows in rows_by_key(store, "documents").items()}
    assert costs == {"doc-a": pytest.approx(0.05), "doc-b": 0.0}
    assert hits == {"doc-a": False, "doc-b": True}
    assert summaries[0].cost_usd_total == pytest.approx(0.05)


def test_date_like_text_in_a_string_column_stays_text(
    store: LocalObjectStore, tables: TableSet
) -> None:
    record = invoice_record(invoice_number="2026-01-31", vendor_name="1999-12-31")
    refresh_tables(store, tables, [extracted("doc-a", record)])
    (invoice,) = stored(store, "invoices").to_pylist()
    assert invoice["invoice_number"] == "2026-01-31"
    assert invoice["vendor_name"] == "1999-12-31"
    assert stored(store, "invoices").schema.field("invoice_number").type == pa.string()


@pytest.mark.parametrize("bad_date", ["31/01/2026", "2026-02-30", "soon", ""])
def test_invalid_date_text_becomes_null_and_the_rest_of_the_row_is_kept(
    store: LocalObjectStore, tables: TableSet, bad_date: str
) -> None:
    record = invoice_record("INV-7", invoice_date=bad_date)
    refresh_tables(store, tables, [extracted("doc-a", record)])
    (invoice,) = stored(store, "invoices").to_pylist()
    assert invoice["invoice_date"] is None
    assert invoice["due_date"] == dt.date(2026, 2, 28)
    assert invoice["invoice_number"] == "INV-7"


def test_user_schema_nested_values_are_stored_as_sorted_json(store: LocalObjectStore) -> None:
    tables = TableSet.for_schema(Shipment)
    record = Shipment(
        reference="SHP-1",
        shipped_on=dt.date(2026, 3, 2),
        weight_kg=12.5,
        pieces=3,
        fragile=True,
        destination=Address(street="Main St 1", city="Oslo"),
        tags=["cold", "express"],
    ).model_dump(mode="json")
    summaries = refresh_tables(store, tables, [extracted("ship-1", record)])

    (row,) = stored(store, "invoices").to_pylist()
    assert row == {
        "document_key": "ship-1",
        "reference": "SHP-1",
        "shipped_on": dt.date(2026, 3, 2),
        "weight_kg": 12.5,
        "pieces": 3,
        "fragile": True,
        "destination": '{"city": "Oslo", "street": "Main St 1"}',
        "tags": '["cold", "express"]',
    }
    assert json.loads(row["destination"]) == {"street": "Main St 1", "city": "Oslo"}
    lines = stored(store, "invoice_line_items")
    assert lines.num_rows == 0
    assert lines.column_names == ["document_key", "line_number"]
    assert {s.name: s.row_count for s in summaries}["invoice_line_items"] == 0


def test_user_schema_datetime_field_is_stored_as_a_timestamp(store: LocalObjectStore) -> None:
    tables = TableSet.for_schema(Stamped)
    received = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    record = Stamped(reference="R-1", received_at=received).model_dump(mode="json")
    refresh_tables(store, tables, [extracted("stamp-1", record)])
    (row,) = stored(store, "invoices").to_pylist()
    assert row["received_at"] == received


def test_read_table_without_a_file_is_empty_with_the_layout_schema(
    store: LocalObjectStore, tables: TableSet
) -> None:
    for layout in (*tables.all, DOCUMENTS, REVIEW_QUEUE):
        table = read_table(store, layout)
        assert table.num_rows == 0
        assert table.schema == layout.arrow_schema


def test_read_table_rebuilds_a_table_written_with_an_older_layout(
    store: LocalObjectStore, tables: TableSet
) -> None:
    old = pa.table({"document_key": ["doc-a"], "total": [5.0], "dropped": ["x"]})
    buffer = io.BytesIO()
    pq.write_table(old, buffer)
    store.put(table_path("invoices"), buffer.getvalue())

    table = read_table(store, tables.records)
    assert table.schema == tables.records.arrow_schema
    (row,) = table.to_pylist()
    assert row["document_key"] == "doc-a"
    assert row["total"] == 5.0
    assert row["invoice_number"] is None


def test_summary_preview_holds_at_most_the_last_five_rows(
    store: LocalObjectStore, tables: TableSet
) -> None:
    outcomes = [extracted(f"doc-{i}") for i in range(7)]
    summaries: list[TableSummary] = refresh_tables(store, tables, outcomes)
    preview = summaries[0].preview
    assert [row["document_key"] for row in preview] == [f"doc-{i}" for i in range(2, 7)]


def test_literal_and_enum_fields_are_plain_string_columns() -> None:
    import enum
    from typing import Literal

    import pyarrow as pa
    from pydantic import BaseModel

    from extraction_pipeline.core.tables.layout import record_layouts

    class Kind(enum.Enum):
        A = "a"

    class Tagged(BaseModel):
        kind: Literal["a", "b"] | None = None
        category: Kind | None = None

    layouts = record_layouts(Tagged, "records", "lines")
    columns = {column.name: column for column in layouts.records.columns}
    assert columns["kind"].type == pa.string() and not columns["kind"].json_encoded
    assert columns["category"].type == pa.string() and not columns["category"].json_encoded


def test_cost_total_adds_every_attempt_and_the_cursor_is_stored(
    store: LocalObjectStore, tables: TableSet
) -> None:
    from extraction_pipeline.core.tables.refresh import FeedPosition, read_position

    assert read_position(store) == FeedPosition()
    first = FeedPosition().advance([7])
    refresh_tables(store, tables, [extracted("doc-a")], paid={"doc-a": 0.01}, position=first)
    failed_again = extracted("doc-a", call=call(cost_usd=0.02))
    (documents, *_) = refresh_tables(
        store, tables, [failed_again], paid={"doc-a": 0.02}, position=first.advance([9])
    )
    (row,) = stored(store, "documents").to_pylist()
    assert row["cost_usd_total"] == pytest.approx(0.03)
    assert row["cost_usd"] == pytest.approx(0.02)
    assert read_position(store) == FeedPosition(9, frozenset({7, 9}))
    assert documents.cost_usd_total == pytest.approx(0.03)


def test_feed_position_takes_late_commits_within_the_window_once() -> None:
    from extraction_pipeline.core.tables.refresh import FEED_WINDOW, FeedPosition

    position = FeedPosition().advance([10, 12])
    assert not position.is_new(12) and not position.is_new(10)
    assert position.is_new(11)  # committed after 12 was read: still taken, once
    later = position.advance([11])
    assert not later.is_new(11) and later.storage_id == 12
    far = later.advance([12 + 2 * FEED_WINDOW])
    assert far.recent == frozenset({12 + 2 * FEED_WINDOW})
    assert FeedPosition.decode(far.encode()) == far
