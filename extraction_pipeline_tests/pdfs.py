"""Hand-made PDFs, good and bad, for the tests."""

from __future__ import annotations

import io

from fpdf import FPDF
from PIL import Image, ImageDraw

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice


def good_pdf(index: int = 1, pages: int = 1) -> bytes:
    return invoice_pdf(make_invoice(index, pages=pages))


def scanned_pdf() -> bytes:
    """A page that is only an image of text: no text layer."""
    image = Image.new("L", (600, 200), 255)
    ImageDraw.Draw(image).text((20, 80), "Invoice number: INV-SCAN-1   Total: 10.00", fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(io.BytesIO(buffer.getvalue()), x=10, y=10, w=180)
    return bytes(pdf.output())


def encrypted_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Invoice number: INV-LOCKED")
    return bytes(pdf.output())


def truncated_pdf() -> bytes:
    data = good_pdf(2)
    return data[: len(data) // 2]


def corrupt_pdf() -> bytes:
    """A PDF header and an end marker around garbage."""
    return b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
