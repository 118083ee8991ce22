"""Business checks on extracted records: required fields, totals that add up, plausible dates.

Checks read fields by name, so any schema with invoice-like fields (`total`, `line_items[].amount`
...) gets them; a field the schema does not have is simply not checked.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

DEFAULT_REQUIRED_FIELDS = ("invoice_number", "invoice_date", "vendor_name", "currency", "total")
EARLIEST_YEAR, LATEST_YEAR = 1990, 2100


class Check(enum.StrEnum):
    REQUIRED_FIELDS = "required_fields"
    TOTALS_ADD_UP = "totals_add_up"
    DATES_PARSE = "dates_parse"


@dataclass(frozen=True)
class Finding:
    """One failed check on one record, in words a reviewer can act on."""

    check: Check
    message: str


@dataclass(frozen=True)
class ValidationPolicy:
    required_fields: tuple[str, ...] = DEFAULT_REQUIRED_FIELDS
    # Amounts agree when they differ by at most max(absolute, relative * larger amount).
    absolute_tolerance: float = 0.01
    relative_tolerance: float = 0.001


def validate_record(
    record: Mapping[str, Any], policy: ValidationPolicy | None = None
) -> list[Finding]:
    """Every finding for `record` (a model dump); an empty list means the record passes."""
    policy = policy or ValidationPolicy()
    return [
        *_required_fields(record, policy),
        *_totals(record, policy),
        *_dates(record),
    ]


def _required_fields(record: Mapping[str, Any], policy: ValidationPolicy) -> list[Finding]:
    missing = [
        name for name in policy.required_fields if name in record and record[name] in (None, "")
    ]
    if not missing:
        return []
    return [Finding(Check.REQUIRED_FIELDS, f"missing required fields: {', '.join(missing)}")]


# Float noise: 1.01 - 1.00 is 0.010000000000000009, which must still count as one cent.
_EPSILON = 1e-9


def _close(a: float, b: float, policy: ValidationPolicy) -> bool:
    tolerance = max(policy.absolute_tolerance, policy.relative_tolerance * max(abs(a), abs(b)))
    return abs(a - b) <= tolerance + _EPSILON


def _number(value: Any) -> float | None:
    """An amount as a float; anything that is not a number (a user schema's text) is unknown."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _totals(record: Mapping[str, Any], policy: ValidationPolicy) -> list[Finding]:
    findings = []
    subtotal, total = _number(record.get("subtotal")), _number(record.get("total"))
    tax = _number(record.get("tax"))
    items: Sequence[Mapping[str, Any]] = record.get("line_items") or []
    amounts = [_number(item.get("amount")) if isinstance(item, Mapping) else None for item in items]
    known = [amount for amount in amounts if amount is not None]
    if subtotal is not None and known and len(known) == len(amounts):
        lines = round(sum(known), 2)
        if not _close(lines, subtotal, policy):
            findings.append(
                Finding(
                    Check.TOTALS_ADD_UP,
                    f"line items sum to {lines:.2f}, subtotal is {subtotal:.2f}",
                )
            )
    if subtotal is not None and total is not None:
        expected = round(subtotal + (tax or 0.0), 2)
        if not _close(expected, total, policy):
            findings.append(
                Finding(
                    Check.TOTALS_ADD_UP,
                    f"subtotal {subtotal:.2f} + tax {tax or 0.0:.2f} = {expected:.2f}, "
                    f"total is {total:.2f}",
                )
            )
    return findings


def _dates(record: Mapping[str, Any]) -> list[Finding]:
    findings = []
    parsed: dict[str, date] = {}
    for name in ("invoice_date", "due_date"):
        value = record.get(name)
        if value is None:
            continue
        try:
            day = value if isinstance(value, date) else date.fromisoformat(str(value))
        except ValueError:
            findings.append(Finding(Check.DATES_PARSE, f"{name} {value!r} is not an ISO date"))
            continue
        if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
            findings.append(Finding(Check.DATES_PARSE, f"{name} {day.isoformat()} is implausible"))
            continue
        parsed[name] = day
    if (
        "invoice_date" in parsed
        and "due_date" in parsed
        and parsed["due_date"] < parsed["invoice_date"]
    ):
        findings.append(
            Finding(
                Check.DATES_PARSE,
                f"due_date {parsed['due_date']} is before invoice_date {parsed['invoice_date']}",
            )
        )
    return findings
