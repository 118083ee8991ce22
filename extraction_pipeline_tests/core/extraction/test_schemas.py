from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from extraction_pipeline.core.extraction.schemas import (
    Invoice,
    LineItem,
    SchemaNotFound,
    load_schema,
)


class PurchaseOrder(BaseModel):
    po_number: str | None = None
    total: float | None = None


NOT_A_MODEL = "just a string"


def _keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [*node, *(key for value in node.values() for key in _keys(value))]
    if isinstance(node, list):
        return [key for value in node for key in _keys(value)]
    return []


def test_empty_invoice_is_all_nulls_and_no_line_items() -> None:
    invoice = Invoice()
    assert invoice.line_items == []
    assert all(
        value is None for name, value in invoice.model_dump().items() if name != "line_items"
    )


def test_invoice_reads_iso_dates_and_nulls_from_json() -> None:
    invoice = Invoice.model_validate_json(
        json.dumps(
            {
                "invoice_number": "INV-1",
                "invoice_date": "2026-01-31",
                "due_date": None,
                "total": 119.0,
                "line_items": [
                    {"description": "x", "quantity": 1, "unit_price": None, "amount": 2}
                ],
            }
        )
    )
    assert invoice.invoice_date == date(2026, 1, 31)
    assert invoice.due_date is None
    assert invoice.line_items == [LineItem(description="x", quantity=1, unit_price=None, amount=2)]


def test_strict_schema_requires_every_field_and_carries_no_defaults() -> None:
    schema = to_strict_json_schema(Invoice)
    assert set(schema["required"]) == set(Invoice.model_fields)
    assert schema["properties"]["line_items"]["type"] == "array"
    assert "default" not in _keys(schema)
    item = schema["$defs"]["LineItem"]
    assert set(item["required"]) == {"description", "quantity", "unit_price", "amount"}


def test_every_field_has_a_description_for_the_model() -> None:
    for model in (Invoice, LineItem):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


@pytest.mark.parametrize("ref", ["invoice", "Invoice", " invoice "])
def test_builtin_schema_names_resolve(ref: str) -> None:
    assert load_schema(ref) is Invoice


@pytest.mark.parametrize(
    "ref",
    [
        "extraction_pipeline_tests.core.extraction.test_schemas:PurchaseOrder",
        "extraction_pipeline_tests.core.extraction.test_schemas.PurchaseOrder",
    ],
)
def test_dotted_paths_resolve_to_user_models(ref: str) -> None:
    assert load_schema(ref) is PurchaseOrder


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("", "empty"),
        ("nosuchthing", "neither a built-in"),
        ("no_such_module_xyz:Model", "cannot import"),
        ("extraction_pipeline_tests.core.extraction.test_schemas:Missing", "has no 'Missing'"),
        ("extraction_pipeline_tests.core.extraction.test_schemas:NOT_A_MODEL", "not a pydantic"),
        ("extraction_pipeline_tests.core.extraction.test_schemas:_keys", "not a pydantic"),
    ],
)
def test_unresolvable_schema_refs_raise_schema_not_found(ref: str, reason: str) -> None:
    with pytest.raises(SchemaNotFound, match=reason):
        load_schema(ref)
