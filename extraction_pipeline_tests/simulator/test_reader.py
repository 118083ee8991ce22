from __future__ import annotations

from typing import Literal

import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.simulator.extract import fill_schema, parse_number, read_invoice
from extraction_pipeline_tests.simulator_fixture import invoice_text


def test_reader_reads_every_labelled_field() -> None:
    values = read_invoice(invoice_text("INV-0042", total="1,119.00"))
    assert values["invoice_number"] == "INV-0042"
    assert (values["invoice_date"], values["due_date"]) == ("2026-01-31", "2026-02-28")
    assert (values["vendor_name"], values["customer_name"]) == (
        "Acme Supplies GmbH",
        "Globex Corporation",
    )
    assert (values["currency"], values["subtotal"], values["tax"]) == ("EUR", 100.0, 19.0)
    assert values["total"] == 1119.0
    assert values["line_items"][0] == {
        "description": "Widget, large",
        "quantity": 2.0,
        "unit_price": 25.0,
        "amount": 50.0,
    }


@pytest.mark.parametrize(
    ("line", "field", "expected"),
    [
        ("Customer: Initech", "customer_name", "Initech"),
        ("VAT: 7.00", "tax", 7.0),
        ("Amount due: $ 12.50", "total", 12.5),
        ("Invoice date: 31.01.2026", "invoice_date", None),
        ("Currency: euro", "currency", None),
        ("currency: usd", "currency", "USD"),
        ("Tax ID: DE123", "tax", None),
        ("Subtotal: 5.00", "total", None),
    ],
)
def test_reader_labels_and_conversions(line: str, field: str, expected: object) -> None:
    assert read_invoice(line)[field] == expected


def test_first_occurrence_wins() -> None:
    assert read_invoice("Total: 1.00\nTotal: 2.00")["total"] == 1.0


def test_short_item_rows_fill_missing_cells_with_null() -> None:
    assert read_invoice("Item: Consulting")["line_items"] == [
        {"description": "Consulting", "quantity": None, "unit_price": None, "amount": None}
    ]


@pytest.mark.parametrize(("raw", "number"), [("1,234.50 EUR", 1234.5), ("-3", -3.0), ("n/a", None)])
def test_parse_number(raw: str, number: float | None) -> None:
    assert parse_number(raw) == number


def test_invoice_schema_filled_from_empty_text_is_all_nulls() -> None:
    filled = fill_schema(to_strict_json_schema(Invoice), read_invoice(""))
    assert Invoice.model_validate(filled) == Invoice()


class Address(BaseModel):
    street: str
    city: str | None


class Unknown(BaseModel):
    code: str
    count: int
    ratio: float
    flag: bool
    tags: list[str]
    kind: Literal["a", "b"]
    address: Address
    maybe: int | None
    total: int


def test_unknown_schema_is_filled_with_values_that_validate() -> None:
    filled = fill_schema(to_strict_json_schema(Unknown), read_invoice("Total: 12.00"))
    record = Unknown.model_validate(filled)
    assert record.model_dump() == {
        "code": "",
        "count": 0,
        "ratio": 0.0,
        "flag": False,
        "tags": [],
        "kind": "a",
        "address": {"street": "", "city": None},
        "maybe": None,
        "total": 12,
    }
