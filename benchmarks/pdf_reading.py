"""PDF reading: pages/s of the project's reader (core.pdf.read_pdf, PDFium) against pypdf on the
same generated corpus (invoices of 1 to 5 pages with a text layer), same task: the text of
every page.

    .venv/bin/python benchmarks/pdf_reading.py            # 300 documents, best of 3
    .venv/bin/python benchmarks/pdf_reading.py --quick    # 40 documents, 1 round
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable

from common import print_table, write_results
from pypdf import PdfReader

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.pdf import read_pdf


def project_reader(data: bytes) -> int:
    return sum(len(text) for text in read_pdf(data).page_texts)


def pypdf_reader(data: bytes) -> int:
    return sum(len(page.extract_text() or "") for page in PdfReader(io.BytesIO(data)).pages)


def best_time(read: Callable[[bytes], int], corpus: list[bytes], rounds: int) -> tuple[float, int]:
    """The fastest of `rounds` passes over the corpus (seconds), and the characters read."""
    best, chars = float("inf"), 0
    for _ in range(rounds):
        began = time.perf_counter()
        chars = sum(read(data) for data in corpus)
        best = min(best, time.perf_counter() - began)
    return best, chars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", "--documents", type=int, default=None, help="default 300")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (1 quick)")
    args = parser.parse_args(argv)
    n = args.documents or (40 if args.quick else 300)
    rounds = args.rounds or (1 if args.quick else 3)
    invoices = [make_invoice(index, seed=31) for index in range(1, n + 1)]
    corpus = [invoice_pdf(invoice) for invoice in invoices]
    pages = sum(invoice.pages for invoice in invoices)
    figures = {}
    for name, read in (("read_pdf", project_reader), ("pypdf", pypdf_reader)):
        seconds, chars = best_time(read, corpus, rounds)
        figures[name] = {
            "seconds": round(seconds, 3),
            "pages_per_s": round(pages / seconds, 1),
            "docs_per_s": round(n / seconds, 1),
            "ms_per_page": round(1000 * seconds / pages, 3),
            "characters": chars,
        }
    ratio = round(figures["read_pdf"]["pages_per_s"] / figures["pypdf"]["pages_per_s"], 2)
    figures["ratio_read_pdf_over_pypdf"] = ratio
    print_table(
        f"PDF text extraction: {n} documents, {pages} pages (best of {rounds})",
        [
            (
                name,
                figures[name]["pages_per_s"],
                figures[name]["ms_per_page"],
                figures[name]["characters"],
            )
            for name in ("read_pdf", "pypdf")
        ]
        + [("ratio read_pdf / pypdf (pages/s)", ratio, "", "")],
        header=("reader", "pages/s", "ms/page", "characters"),
    )
    write_results("pdf_reading", figures, {"documents": n, "pages": pages, "rounds": rounds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
