"""Generated invoice PDFs with known contents, for the demo, the tests and the benchmarks.

The text follows the plain layout the model simulator reads ("Invoice number: ...",
"Item: description | quantity | unit price | amount"), so every generated document has a
ground truth to compare an extraction with. Output is byte-for-byte deterministic for a seed,
which is what makes re-dropping the demo files a no-op.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from fpdf import FPDF

if TYPE_CHECKING:
    from extraction_pipeline.core.intake.inbox import InboxSource

_VENDORS = (
    "Acme Tools GmbH",
    "Nordwind Logistics AB",
    "Blue Harbor Supplies Ltd",
    "Kite & Co SARL",
)
_CUSTOMERS = ("Globex Corporation", "Initech LLC", "Umbrella Retail BV", "Stark Components Inc")
_ITEMS = ("Steel bolts M8", "Pallet transport", "Safety gloves", "Consulting hour", "Cable 3x1.5mm")
_CURRENCIES = ("EUR", "USD", "GBP", "SEK")
_FIXED_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SampleLineItem:
    description: str
    quantity: float
    unit_price: float
    amount: float


@dataclass(frozen=True)
class SampleInvoice:
    invoice_number: str
    invoice_date: date
    due_date: date
    vendor_name: str
    customer_name: str
    currency: str
    line_items: tuple[SampleLineItem, ...]
    tax_rate: float
    pages: int = 1

    @property
    def subtotal(self) -> float:
        return round(sum(item.amount for item in self.line_items), 2)

    @property
    def tax(self) -> float:
        return round(self.subtotal * self.tax_rate, 2)

    @property
    def total(self) -> float:
        return round(self.subtotal + self.tax, 2)


def make_invoice(index: int, seed: int = 7, pages: int | None = None) -> SampleInvoice:
    """The `index`-th sample invoice of a seeded series."""
    rng = random.Random(seed * 1_000_003 + index)
    items = []
    for _ in range(rng.randint(1, 6)):
        quantity = float(rng.randint(1, 20))
        unit_price = round(rng.uniform(2, 400), 2)
        items.append(
            SampleLineItem(
                rng.choice(_ITEMS), quantity, unit_price, round(quantity * unit_price, 2)
            )
        )
    issued = date(2026, 1, 1) + timedelta(days=rng.randint(0, 300))
    return SampleInvoice(
        invoice_number=f"INV-{seed:02d}-{index:06d}",
        invoice_date=issued,
        due_date=issued + timedelta(days=30),
        vendor_name=rng.choice(_VENDORS),
        customer_name=rng.choice(_CUSTOMERS),
        currency=rng.choice(_CURRENCIES),
        line_items=tuple(items),
        tax_rate=rng.choice((0.0, 0.07, 0.19, 0.2, 0.25)),
        pages=pages if pages is not None else rng.randint(1, 5),
    )


def invoice_pdf(invoice: SampleInvoice, extra_text: str = "") -> bytes:
    """Render `invoice` as a text PDF of `invoice.pages` pages (later pages carry terms)."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(_FIXED_TIME)
    pdf.set_title(invoice.invoice_number)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.cell(text="INVOICE", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=11)
    lines = [
        f"Invoice number: {invoice.invoice_number}",
        f"Invoice date: {invoice.invoice_date.isoformat()}",
        f"Due date: {invoice.due_date.isoformat()}",
        f"Vendor: {invoice.vendor_name}",
        f"Bill to: {invoice.customer_name}",
        f"Currency: {invoice.currency}",
        "",
        "Items (description | quantity | unit price | amount):",
    ]
    lines += [
        f"Item: {item.description} | {item.quantity:g} | {item.unit_price:.2f} | {item.amount:.2f}"
        for item in invoice.line_items
    ]
    lines += [
        "",
        f"Subtotal: {invoice.subtotal:.2f}",
        f"Tax: {invoice.tax:.2f}",
        f"Total: {invoice.total:.2f}",
    ]
    if extra_text:
        lines += ["", extra_text]
    for line in lines:
        if line:
            pdf.cell(h=6, text=line, new_x="LMARGIN", new_y="NEXT")
        else:
            pdf.ln(6)
    for page in range(2, invoice.pages + 1):
        pdf.add_page()
        heading = f"Terms and conditions, page {page} of {invoice.pages}"
        pdf.cell(h=6, text=heading, new_x="LMARGIN", new_y="NEXT")
        pdf.multi_cell(w=0, text=_TERMS)
    return bytes(pdf.output())


_TERMS = (
    "Payment is due within thirty days of the invoice date. Late payments accrue interest at the "
    "statutory rate. Goods remain our property until paid in full. Please quote the invoice "
    "number with every payment."
)


def write_demo_documents(inbox: InboxSource, count: int = 6, seed: int = 7) -> list[str]:
    """Drop `count` sample invoices into `inbox` (each whole at once, so a watching sensor never
    sees half a file) and return their names."""
    names = []
    for index in range(1, count + 1):
        invoice = make_invoice(index, seed=seed)
        name = f"invoice {invoice.invoice_number}.pdf"
        inbox.drop(name, invoice_pdf(invoice))
        names.append(name)
    return names
