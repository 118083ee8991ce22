"""The simulator's "model": a deterministic reader of labelled invoice text, and a schema filler.

Document text format it understands (one field per line, labels case-insensitive, first
occurrence wins; the sample PDFs are generated in this format)::

    Invoice number: INV-0001
    Invoice date: 2026-01-31            (ISO 8601 only; anything else reads as null)
    Due date: 2026-02-28
    Vendor: Acme Supplies GmbH          (also "Seller:", "From:")
    Bill to: Globex Corporation         (also "Customer:", "Buyer:")
    Currency: EUR                       (three-letter code)
    Item: Widget, large | 2 | 10.00 | 20.00
    Item: Service hour | 1.5 | 80.00 | 120.00
    Subtotal: 140.00
    Tax: 26.60                          (also "VAT:")
    Total: 166.60                       (also "Amount due:")

Item rows are ``Item: <description> | <quantity> | <unit price> | <amount>``. Amounts may carry
thousands separators (``1,234.50``) and a currency symbol or code, which are ignored.

`fill_schema` answers any strict JSON schema: a property named like a reader field gets the value
read (when its type fits), otherwise null when nullable, else a type-appropriate empty value
(``""``, ``0``, ``false``, ``[]``), so the answer always validates against the schema.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

Json = Any  # JSON values as parsed from the request: the simulator is a wire-level stand-in.

_LABELS: dict[str, tuple[str, ...]] = {
    "invoice_number": ("invoice number", "invoice no.", "invoice no", "invoice #"),
    "invoice_date": ("invoice date", "date of issue"),
    "due_date": ("due date", "payment due"),
    "vendor_name": ("vendor", "seller", "from"),
    "customer_name": ("bill to", "customer", "buyer"),
    "currency": ("currency",),
    "subtotal": ("subtotal", "net amount"),
    "tax": ("tax", "vat"),
    "total": ("total", "amount due"),
}
_DATE_FIELDS = frozenset({"invoice_date", "due_date"})
_AMOUNT_FIELDS = frozenset({"subtotal", "tax", "total"})
_LINE = re.compile(r"^\s*(?P<label>[^:]{1,40}?)\s*:\s*(?P<value>.*?)\s*$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_NOT_NUMERIC = re.compile(r"[^0-9.\-]")


def read_invoice(text: str) -> dict[str, Json]:
    """Fields read from labelled lines of `text`; absent or unparsable fields are None."""
    values: dict[str, Json] = {name: None for name in _LABELS}
    items: list[dict[str, Json]] = []
    label_to_field = {label: name for name, labels in _LABELS.items() for label in labels}
    for line in text.splitlines():
        found = _LINE.match(line)
        if found is None:
            continue
        label, raw = found["label"].strip().lower(), found["value"]
        if label == "item":
            items.append(_read_item(raw))
            continue
        name = label_to_field.get(label)
        if name is None or values[name] is not None or not raw:
            continue
        values[name] = _convert(name, raw)
    values["line_items"] = items
    return values


def _convert(name: str, raw: str) -> Json:
    if name in _DATE_FIELDS:
        return _iso_date(raw)
    if name in _AMOUNT_FIELDS:
        return parse_number(raw)
    if name == "currency":
        code = raw.strip().upper()
        return code if _CURRENCY.match(code) else None
    return raw


def _read_item(raw: str) -> dict[str, Json]:
    cells = [cell.strip() for cell in raw.split("|")]
    cells += [""] * (4 - len(cells))
    return {
        "description": cells[0] or None,
        "quantity": parse_number(cells[1]),
        "unit_price": parse_number(cells[2]),
        "amount": parse_number(cells[3]),
    }


def _iso_date(raw: str) -> str | None:
    try:
        return date.fromisoformat(raw.strip()).isoformat()
    except ValueError:
        return None


def parse_number(raw: str) -> float | None:
    """`"1,234.50 EUR"` -> 1234.5; None when no number is left."""
    cleaned = _NOT_NUMERIC.sub("", raw.replace(",", ""))
    try:
        return float(cleaned)
    except ValueError:
        return None


def fill_schema(schema: dict[str, Json], values: dict[str, Json]) -> Json:
    """An instance of the strict JSON `schema`, taking values by property name from `values`."""
    return _fill(schema, schema, None, values)


def _fill(node: Json, root: dict[str, Json], value: Json, context: dict[str, Json]) -> Json:
    node = _resolve(node, root)
    variants = node.get("anyOf")
    if variants is None and isinstance(node.get("type"), list):
        variants = [{**node, "type": kind} for kind in node["type"]]
    if variants is not None:
        concrete = [_resolve(v, root) for v in variants if _resolve(v, root).get("type") != "null"]
        nullable = len(concrete) < len(variants)
        for variant in concrete:
            if value is not None and _fits(variant, value):
                return _fill(variant, root, value, context)
        if nullable:
            return None
        return _fill(concrete[0], root, None, context) if concrete else None
    return _fill_typed(node, root, value, context)


def _fill_typed(node: Json, root: dict[str, Json], value: Json, context: dict[str, Json]) -> Json:
    kind = node.get("type")
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return value if value in node["enum"] else node["enum"][0]
    if kind == "object" or "properties" in node:
        own = value if isinstance(value, dict) else context
        properties = node.get("properties", {})
        return {name: _fill(sub, root, own.get(name), own) for name, sub in properties.items()}
    if kind == "array":
        items = node.get("items", {})
        rows = value if isinstance(value, list) else []
        return [_fill(items, root, row, row if isinstance(row, dict) else {}) for row in rows]
    if not _fits(node, value):
        return _EMPTY.get(kind)
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    return value


_EMPTY: dict[str | None, Json] = {"string": "", "number": 0, "integer": 0, "boolean": False}


def _fits(node: Json, value: Json) -> bool:
    kind = node.get("type")
    if value is None:
        return False
    if kind == "string":
        if not isinstance(value, str):
            return False
        return node.get("format") != "date" or _iso_date(value) is not None
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int | float) and float(value).is_integer()
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return "enum" in node or "const" in node


def _resolve(node: Json, root: dict[str, Json]) -> Json:
    """Follow local `$ref`s (``#/$defs/Name``)."""
    while isinstance(node, dict) and "$ref" in node:
        target: Json = root
        for key in node["$ref"].lstrip("#/").split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        node = target
    return node if isinstance(node, dict) else {}
