"""Column layouts of the output tables, derived from the extraction schema.

Top-level scalar fields of the record become columns of the record table (`invoices`); the first
list-of-objects field (`line_items`) becomes the line table (`invoice_line_items`), one row per
element. Nested objects that fit neither become JSON text columns.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
from dataclasses import dataclass

import pyarrow as pa
from pydantic import BaseModel


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str = ""
    json_encoded: bool = False  # nested values stored as JSON text


@dataclass(frozen=True)
class TableLayout:
    name: str
    columns: tuple[Column, ...]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(column.name, column.type) for column in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


# The four tables: asset names, file names (tables/<name>.parquet) and Dagster keys all come from
# here. The record tables keep their invoice names whatever the schema (a pinned contract).
DOCUMENTS_TABLE = "documents"
RECORDS_TABLE = "invoices"
LINE_ITEMS_TABLE = "invoice_line_items"
REVIEW_QUEUE_TABLE = "review_queue"
TABLE_NAMES = (DOCUMENTS_TABLE, RECORDS_TABLE, LINE_ITEMS_TABLE, REVIEW_QUEUE_TABLE)
TABLES_PREFIX = "tables"


@dataclass(frozen=True)
class RecordLayouts:
    """The record table and (when the schema has a list of objects) its line table."""

    records: TableLayout
    lines: TableLayout
    lines_field: str | None


KEY = Column("document_key", pa.string(), "Partition key of the document.")
LINE_NUMBER = Column("line_number", pa.int32(), "1-based position in the document.")

DOCUMENTS = TableLayout(
    DOCUMENTS_TABLE,
    (
        KEY,
        Column("file_name", pa.string(), "File name when first seen in the drop folder."),
        Column("sha256", pa.string(), "SHA-256 of the original bytes."),
        Column("pages", pa.int32(), "Page count."),
        Column("status", pa.string(), "extracted, needs_review or failed."),
        Column("model", pa.string(), "Model that answered."),
        Column("input_tokens", pa.int64(), "Input tokens, all attempts."),
        Column("cached_input_tokens", pa.int64(), "Of which served from the prompt cache."),
        Column("output_tokens", pa.int64(), "Output tokens, all attempts."),
        Column("cost_usd", pa.float64(), "Cost of the latest outcome (0 when reused)."),
        Column("cost_usd_total", pa.float64(), "Cost of every attempt so far, failed included."),
        Column("attempts", pa.int32(), "Model calls made, retries and repair included."),
        Column("latency_seconds", pa.float64(), "Time spent waiting for the model."),
        Column("cache_hit", pa.bool_(), "True when a stored result was reused (not paid again)."),
        Column("extracted_at", pa.timestamp("us", tz="UTC"), "When this outcome was recorded."),
        Column("review_reason", pa.string(), "Why a person should look, if they should."),
        Column(
            "error_kind",
            pa.string(),
            "Failure kind: refused, truncated, rate_limited... from extraction; EmptyFile, "
            "NotAPdf, CorruptPdf, EncryptedPdf, TooLarge for an unreadable file.",
        ),
        Column("error_message", pa.string(), "The failure in words."),
        Column("run_id", pa.string(), "Dagster run that produced the outcome."),
    ),
)

REVIEW_QUEUE = TableLayout(
    REVIEW_QUEUE_TABLE,
    (
        KEY,
        Column("file_name", pa.string(), "File name."),
        Column("status", pa.string(), "needs_review (a check failed) or failed (e.g. refused)."),
        Column("checks_failed", pa.string(), "Names of the failed checks, comma-separated."),
        Column("review_reason", pa.string(), "What is wrong, in words."),
        Column("error_kind", pa.string(), "Failure kind when the extraction itself failed."),
        Column("extracted_at", pa.timestamp("us", tz="UTC"), "When the outcome was recorded."),
    ),
)


def record_layouts(schema: type[BaseModel], table_name: str, lines_name: str) -> RecordLayouts:
    record_columns = [KEY]
    lines_field: str | None = None
    line_columns = [KEY, LINE_NUMBER]
    for name, field in schema.model_fields.items():
        annotation = _strip_optional(field.annotation)
        item = _list_item_model(annotation)
        if item is not None and lines_field is None:
            lines_field = name
            for item_name, item_field in item.model_fields.items():
                line_columns.append(
                    _column(item_name, item_field.annotation, item_field.description)
                )
            continue
        record_columns.append(_column(name, annotation, field.description))
    return RecordLayouts(
        records=TableLayout(table_name, tuple(record_columns)),
        lines=TableLayout(lines_name, tuple(line_columns)),
        lines_field=lines_field,
    )


def _column(name: str, annotation: object, description: str | None) -> Column:
    base = _strip_optional(annotation)
    if typing.get_origin(base) is typing.Literal:
        base = type(typing.get_args(base)[0])
    elif isinstance(base, type) and issubclass(base, enum.Enum):
        base = str
    scalar = _SCALARS.get(base) if isinstance(base, type) else None
    if scalar is not None:
        return Column(name, scalar, description or "")
    return Column(name, pa.string(), (description or "") + " (JSON)", json_encoded=True)


_SCALARS: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    dt.date: pa.date32(),
    dt.datetime: pa.timestamp("us", tz="UTC"),
}


def _strip_optional(annotation: object) -> object:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(arguments) == 1:
            return arguments[0]
    return annotation


def _list_item_model(annotation: object) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (None,)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def table_path(table: str) -> str:
    """Where a table is stored, relative to the data dir."""
    return f"{TABLES_PREFIX}/{table}.parquet"


@dataclass(frozen=True)
class TableSet:
    """The four output tables for one extraction schema."""

    documents: TableLayout
    records: TableLayout
    lines: TableLayout
    review_queue: TableLayout
    lines_field: str | None

    @classmethod
    def for_schema(cls, schema: type[BaseModel]) -> TableSet:
        layouts: RecordLayouts = record_layouts(schema, RECORDS_TABLE, LINE_ITEMS_TABLE)
        return cls(DOCUMENTS, layouts.records, layouts.lines, REVIEW_QUEUE, layouts.lines_field)

    @property
    def all(self) -> tuple[TableLayout, ...]:
        return (self.documents, self.records, self.lines, self.review_queue)
