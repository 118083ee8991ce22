"""Output models the agent extracts into, and the registry that resolves a schema reference.

The models are written for OpenAI strict structured outputs: every property is sent as required,
so "missing" is expressed as `null` (an `X | None = None` field) rather than by omission, and no
field carries a non-None default (strict mode may reject defaults). The one exception is
`Invoice.line_items`, see its comment.
"""

from __future__ import annotations

import importlib
from datetime import date

from pydantic import BaseModel, Field


class LineItem(BaseModel):
    """One row of an invoice's item table."""

    description: str | None = Field(default=None, description="Item or service description.")
    quantity: float | None = Field(default=None, description="Quantity billed.")
    unit_price: float | None = Field(default=None, description="Price per unit, without currency.")
    amount: float | None = Field(default=None, description="Line total, without currency.")


class Invoice(BaseModel):
    """An invoice as printed on the document; null for anything the document does not show."""

    invoice_number: str | None = Field(default=None, description="Invoice number or identifier.")
    invoice_date: date | None = Field(default=None, description="Issue date, ISO 8601 YYYY-MM-DD.")
    due_date: date | None = Field(default=None, description="Payment due date, YYYY-MM-DD.")
    vendor_name: str | None = Field(default=None, description="Seller / issuer name.")
    customer_name: str | None = Field(default=None, description="Buyer / bill-to name.")
    currency: str | None = Field(default=None, description="ISO 4217 code, e.g. EUR, USD.")
    subtotal: float | None = Field(default=None, description="Amount before tax.")
    tax: float | None = Field(default=None, description="Total tax amount.")
    total: float | None = Field(default=None, description="Amount due including tax.")
    # Not nullable: "no line items" is an empty list, so consumers never branch on None vs [].
    # default_factory leaves no "default" key in the JSON schema, so strict mode sees a plain
    # required array, and Invoice() still builds without arguments.
    line_items: list[LineItem] = Field(
        default_factory=list, description="Item rows in document order; empty if none."
    )


BUILTIN_SCHEMAS: dict[str, type[BaseModel]] = {"invoice": Invoice}


class SchemaNotFound(LookupError):
    """A schema reference that names no importable pydantic model. Permanent (configuration)."""


def load_schema(ref: str) -> type[BaseModel]:
    """Resolve a schema reference to a pydantic model class.

    Accepts a built-in name (``"invoice"``), ``"package.module:ClassName"`` or
    ``"package.module.ClassName"``. Raises `SchemaNotFound` with the reason otherwise.
    """
    name = ref.strip()
    if not name:
        raise SchemaNotFound("empty schema reference")
    builtin = BUILTIN_SCHEMAS.get(name.lower())
    if builtin is not None:
        return builtin
    module_name, attr = _split_ref(name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SchemaNotFound(
            f"schema {ref!r}: cannot import module {module_name!r} ({error})"
        ) from error
    try:
        candidate = getattr(module, attr)
    except AttributeError as error:
        raise SchemaNotFound(f"schema {ref!r}: module {module_name!r} has no {attr!r}") from error
    if not (isinstance(candidate, type) and issubclass(candidate, BaseModel)):
        raise SchemaNotFound(f"schema {ref!r}: {attr!r} is not a pydantic BaseModel subclass")
    return candidate


def _split_ref(ref: str) -> tuple[str, str]:
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
    else:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        known = ", ".join(sorted(BUILTIN_SCHEMAS))
        raise SchemaNotFound(
            f"schema {ref!r} is neither a built-in ({known}) nor 'module:ClassName'"
        )
    return module_name, attr
