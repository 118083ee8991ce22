"""Business checks on extracted records: required fields, totals, dates (pure, no Dagster)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from extraction_pipeline.core.extraction.validation import (
    DEFAULT_REQUIRED_FIELDS,
    Check,
    Finding,
    ValidationPolicy,
    validate_record,
)


def clean_record(**overrides: Any) -> dict[str, Any]:
    """A record as `Invoice.model_dump(mode="json")` gives it, passing every check."""
    record: dict[str, Any] = {
        "invoice_number": "INV-0001",
        "invoice_date": "2026-01-31",
        "due_date": "2026-02-28",
        "vendor_name": "Acme Supplies GmbH",
        "customer_name": "Globex Corporation",
        "currency": "EUR",
        "subtotal": 100.0,
        "tax": 19.0,
        "total": 119.0,
        "line_items": [
            {"description": "Widget", "quantity": 2.0, "unit_price": 25.0, "amount": 50.0},
            {"description": "Service", "quantity": 1.0, "unit_price": 50.0, "amount": 50.0},
        ],
    }
    record.update(overrides)
    return record


def totals(subtotal: float | None, tax: float | None, total: float | None) -> dict[str, Any]:
    return {"subtotal": subtotal, "tax": tax, "total": total}


def test_clean_record_has_no_findings() -> None:
    assert validate_record(clean_record()) == []


def test_empty_record_has_no_findings_because_absent_fields_are_not_checked() -> None:
    assert validate_record({}) == []


@pytest.mark.parametrize("field", DEFAULT_REQUIRED_FIELDS)
@pytest.mark.parametrize("empty", [None, ""])
def test_null_or_empty_required_field_is_reported_by_name(field: str, empty: str | None) -> None:
    required = [f for f in validate_record({field: empty}) if f.check is Check.REQUIRED_FIELDS]
    assert required == [Finding(Check.REQUIRED_FIELDS, f"missing required fields: {field}")]


def test_all_missing_required_fields_are_listed_in_one_finding_in_policy_order() -> None:
    record = clean_record(invoice_number=None, currency="", vendor_name=None)
    assert validate_record(record) == [
        Finding(
            Check.REQUIRED_FIELDS, "missing required fields: invoice_number, vendor_name, currency"
        )
    ]


def test_required_field_absent_from_the_schema_is_not_checked() -> None:
    record = clean_record()
    del record["vendor_name"]
    del record["currency"]
    assert validate_record(record) == []


def test_policy_decides_which_fields_are_required() -> None:
    record = clean_record(customer_name=None, invoice_number=None)
    policy = ValidationPolicy(required_fields=("customer_name",))
    assert validate_record(record, policy) == [
        Finding(Check.REQUIRED_FIELDS, "missing required fields: customer_name")
    ]


@pytest.mark.parametrize("value", [0, 0.0, False, "0", " "])
def test_falsy_but_present_values_are_not_missing(value: object) -> None:
    assert validate_record({"total": value}, ValidationPolicy(required_fields=("total",))) == []


def test_line_items_that_do_not_sum_to_the_subtotal_are_reported() -> None:
    record = clean_record(subtotal=90.0, total=109.0)
    assert validate_record(record) == [
        Finding(Check.TOTALS_ADD_UP, "line items sum to 100.00, subtotal is 90.00")
    ]


def test_subtotal_plus_tax_that_differs_from_total_is_reported() -> None:
    record = clean_record(total=120.0)
    assert validate_record(record) == [
        Finding(Check.TOTALS_ADD_UP, "subtotal 100.00 + tax 19.00 = 119.00, total is 120.00")
    ]


def test_both_totals_findings_are_reported_together() -> None:
    record = clean_record(subtotal=80.0, tax=10.0, total=100.0)
    assert [f.message for f in validate_record(record)] == [
        "line items sum to 100.00, subtotal is 80.00",
        "subtotal 80.00 + tax 10.00 = 90.00, total is 100.00",
    ]


def test_missing_tax_counts_as_zero() -> None:
    assert validate_record(totals(100.0, None, 100.0)) == []
    assert validate_record(totals(100.0, None, 119.0)) == [
        Finding(Check.TOTALS_ADD_UP, "subtotal 100.00 + tax 0.00 = 100.00, total is 119.00")
    ]


@pytest.mark.parametrize(
    ("subtotal", "total"),
    [(None, 119.0), (100.0, None), (None, None)],
    ids=["no-subtotal", "no-total", "neither"],
)
def test_total_check_needs_both_subtotal_and_total(
    subtotal: float | None, total: float | None
) -> None:
    no_required = ValidationPolicy(required_fields=())
    assert validate_record(totals(subtotal, 0.0, total), no_required) == []


@pytest.mark.parametrize(
    ("subtotal", "total", "agree"),
    [
        # Absolute tolerance (one cent) dominates below 10.00.
        (5.00, 5.01, True),
        (5.01, 5.00, True),
        (5.00, 5.02, False),
        (0.00, 0.01, True),
        (0.00, 0.02, False),
        # Relative tolerance (0.1% of the larger amount) dominates above 10.00.
        (1000.00, 1001.00, True),
        (1001.00, 1000.00, True),
        (1000.00, 1001.01, False),
        (10000.00, 10010.00, True),
        (10000.00, 10010.02, False),
        (100.00, 100.10, True),
        (100.00, 100.11, False),
    ],
)
def test_total_tolerance_is_the_larger_of_one_cent_and_a_tenth_of_a_percent(
    subtotal: float, total: float, agree: bool
) -> None:
    findings = validate_record(totals(subtotal, 0.0, total))
    assert (findings == []) is agree
    assert all(f.check is Check.TOTALS_ADD_UP for f in findings)


@pytest.mark.parametrize(
    ("subtotal", "total"), [(1.00, 1.01), (0.03, 0.04), (0.50, 0.51), (9.95, 9.96)]
)
def test_one_cent_difference_below_ten_is_within_tolerance(subtotal: float, total: float) -> None:
    assert validate_record(totals(subtotal, 0.0, total)) == []


def test_empty_string_total_is_reported_missing_not_a_crash() -> None:
    record = {"subtotal": 100.0, "tax": 0.0, "total": ""}
    assert validate_record(record) == [
        Finding(Check.REQUIRED_FIELDS, "missing required fields: total")
    ]


@pytest.mark.parametrize(
    ("amounts", "subtotal", "agree"),
    [
        ([33.33, 33.33, 33.34], 100.00, True),
        ([0.1, 0.2], 0.3, True),
        ([50.0, 49.99], 100.00, True),
        ([50.0, 49.98], 100.00, True),
        ([50.0, 49.8], 100.00, False),
        ([-10.0, 110.0], 100.00, True),
    ],
)
def test_line_items_sum_is_compared_with_tolerance(
    amounts: list[float], subtotal: float, agree: bool
) -> None:
    record = {"subtotal": subtotal, "line_items": [{"amount": a} for a in amounts]}
    findings = validate_record(record)
    assert (findings == []) is agree


@pytest.mark.parametrize(
    "line_items",
    [
        [{"amount": 50.0}, {"amount": None}],
        [{"amount": None}],
        [{"description": "no amount key"}, {"amount": 10.0}],
        [],
    ],
    ids=["one-null", "all-null", "absent-amount", "no-lines"],
)
def test_line_check_is_skipped_when_any_line_amount_is_unknown(
    line_items: list[dict[str, Any]],
) -> None:
    record = clean_record(subtotal=999.0, tax=0.0, total=999.0, line_items=line_items)
    assert validate_record(record) == []


def test_line_check_is_skipped_without_a_subtotal() -> None:
    record = {"line_items": [{"amount": 1.0}], "subtotal": None, "total": 5.0}
    assert validate_record(record) == []


@pytest.mark.parametrize("value", ["31/01/2026", "January 31, 2026", "2026-13-01", "2026-02-30"])
def test_non_iso_invoice_date_is_reported(value: str) -> None:
    findings = validate_record(clean_record(invoice_date=value))
    assert findings == [Finding(Check.DATES_PARSE, f"invoice_date {value!r} is not an ISO date")]


def test_non_iso_due_date_is_reported() -> None:
    findings = validate_record(clean_record(due_date="end of month"))
    assert findings == [Finding(Check.DATES_PARSE, "due_date 'end of month' is not an ISO date")]


@pytest.mark.parametrize(
    ("value", "plausible"),
    [
        ("1989-12-31", False),
        ("1990-01-01", True),
        ("2100-12-31", True),
        ("2101-01-01", False),
        ("0001-01-01", False),
    ],
)
def test_invoice_date_outside_1990_to_2100_is_implausible(value: str, plausible: bool) -> None:
    findings = validate_record(clean_record(invoice_date=value, due_date=None))
    expected = (
        [] if plausible else [Finding(Check.DATES_PARSE, f"invoice_date {value} is implausible")]
    )
    assert findings == expected


def test_implausible_due_date_is_reported_once_and_not_compared() -> None:
    findings = validate_record(clean_record(due_date="2999-01-01"))
    assert findings == [Finding(Check.DATES_PARSE, "due_date 2999-01-01 is implausible")]


def test_due_date_before_invoice_date_is_reported() -> None:
    findings = validate_record(clean_record(invoice_date="2026-03-01", due_date="2026-02-28"))
    assert findings == [
        Finding(Check.DATES_PARSE, "due_date 2026-02-28 is before invoice_date 2026-03-01")
    ]


def test_due_date_on_the_invoice_date_is_fine() -> None:
    assert validate_record(clean_record(invoice_date="2026-03-01", due_date="2026-03-01")) == []


def test_date_objects_are_checked_like_iso_strings() -> None:
    record = clean_record(invoice_date=date(2026, 3, 1), due_date=date(2026, 2, 1))
    assert validate_record(record) == [
        Finding(Check.DATES_PARSE, "due_date 2026-02-01 is before invoice_date 2026-03-01")
    ]


def test_unparsable_invoice_date_skips_the_due_date_comparison() -> None:
    findings = validate_record(clean_record(invoice_date="soon", due_date="1999-01-01"))
    assert findings == [Finding(Check.DATES_PARSE, "invoice_date 'soon' is not an ISO date")]


def test_findings_come_in_check_order_required_then_totals_then_dates() -> None:
    record = clean_record(vendor_name=None, total=1.0, due_date="2026-01-01")
    assert [f.check for f in validate_record(record)] == [
        Check.REQUIRED_FIELDS,
        Check.TOTALS_ADD_UP,
        Check.DATES_PARSE,
    ]
