"""Reading PDF documents: identity (SHA-256), page count, text per page, text-layer detection.

Every way a file can be unreadable maps to one `UnreadablePdf` subclass whose message says what is
wrong, so an operator reading a failed partition knows what to do without opening the file.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

PDF_MAGIC = b"%PDF-"
# PDFium accepts a header anywhere in the first KiB, as Acrobat does.
MAGIC_SEARCH_BYTES = 1024
# Fewer non-blank characters than this per page means a scan without a usable text layer.
MIN_TEXT_CHARS_PER_PAGE = 25
# PDFium is not thread-safe: every use of it in the process (the simulator's too) goes through
# this one lock.
PDFIUM_LOCK = threading.RLock()
# Page-tree counts, to tell a PDF without pages (which PDFium refuses to load) from a corrupt one.
_PAGE_COUNT = re.compile(rb"/Count\s+(\d+)")


@dataclass(frozen=True)
class PdfLimits:
    """Upper bounds on what the pipeline accepts; larger documents are refused, not truncated."""

    max_bytes: int = 50 * 1024 * 1024
    max_pages: int = 200


class UnreadablePdf(Exception):
    """A document that cannot be read as a PDF. Permanent: retrying the same bytes cannot help."""

    reason = "unreadable"


class EmptyFile(UnreadablePdf):
    reason = "empty_file"


class NotAPdf(UnreadablePdf):
    reason = "not_a_pdf"


class CorruptPdf(UnreadablePdf):
    reason = "corrupt_or_truncated"


class EncryptedPdf(UnreadablePdf):
    reason = "encrypted"


class TooLarge(UnreadablePdf):
    reason = "too_large"


@dataclass(frozen=True)
class PdfDocumentInfo:
    """What the pipeline knows about a readable PDF."""

    sha256: str
    size_bytes: int
    page_count: int
    page_texts: tuple[str, ...]
    has_text_layer: bool

    @property
    def text_chars(self) -> int:
        return sum(len(text) for text in self.page_texts)


def sha256_hex(data: bytes) -> str:
    """The document's identity: SHA-256 of its bytes, lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def read_pdf(data: bytes, limits: PdfLimits | None = None) -> PdfDocumentInfo:
    """Open a PDF from its bytes and read its text, or raise the specific `UnreadablePdf`."""
    limits = limits or PdfLimits()
    _check_bytes(data, limits)
    with PDFIUM_LOCK:
        document = _open(data)
        try:
            page_count = _check_pages(len(document), limits)
            page_texts = tuple(_page_text(document, index) for index in range(page_count))
        finally:
            document.close()
    return PdfDocumentInfo(
        sha256=sha256_hex(data),
        size_bytes=len(data),
        page_count=page_count,
        page_texts=page_texts,
        has_text_layer=_has_text_layer(page_texts),
    )


def check_pdf(data: bytes, limits: PdfLimits | None = None) -> int:
    """Cheap readability check (opens the document, reads no text); returns the page count or
    raises the same `UnreadablePdf` that `read_pdf` would."""
    limits = limits or PdfLimits()
    _check_bytes(data, limits)
    with PDFIUM_LOCK:
        document = _open(data)
        try:
            return _check_pages(len(document), limits)
        finally:
            document.close()


def render_pages_png(data: bytes, dpi: int = 150, max_pages: int | None = None) -> list[bytes]:
    """Render pages as grayscale PNG images, for documents without a usable text layer."""
    import io

    images: list[bytes] = []
    with PDFIUM_LOCK:
        document = _open(data)
        try:
            count = len(document) if max_pages is None else min(len(document), max_pages)
            for index in range(count):
                page = document[index]
                bitmap = page.render(scale=dpi / 72, grayscale=True)
                image = bitmap.to_pil()
                page.close()
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", optimize=True)
                images.append(buffer.getvalue())
        finally:
            document.close()
    return images


def _check_bytes(data: bytes, limits: PdfLimits) -> None:
    if not data:
        raise EmptyFile("the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise TooLarge(
            f"the file is {len(data):,} bytes; the limit is {limits.max_bytes:,} "
            "(EXTRACTION_MAX_BYTES)"
        )
    if PDF_MAGIC not in data[:MAGIC_SEARCH_BYTES]:
        head = data[:8].hex(" ")
        raise NotAPdf(f"the file does not start with a PDF header (%PDF-); first bytes: {head}")


def _check_pages(page_count: int, limits: PdfLimits) -> int:
    if page_count > limits.max_pages:
        raise TooLarge(
            f"the PDF has {page_count} pages; the limit is {limits.max_pages} "
            "(EXTRACTION_MAX_PAGES)"
        )
    if page_count == 0:
        raise CorruptPdf("the PDF has no pages")
    return page_count


def _open(data: bytes) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        code = getattr(error, "err_code", None)
        if code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY):
            raise EncryptedPdf(
                "the PDF is encrypted and needs a password to open; "
                "save an unencrypted copy and drop it again"
            ) from error
        if b"%%EOF" not in data[-2048:]:
            raise CorruptPdf(
                f"the PDF is truncated: no %%EOF marker at the end of its {len(data):,} bytes "
                "(was it copied before it was completely written?)"
            ) from error
        counts = _PAGE_COUNT.findall(data)
        if counts and all(int(count) == 0 for count in counts):
            raise CorruptPdf("the PDF has no pages") from error
        raise CorruptPdf(f"the PDF is corrupt and cannot be parsed ({error})") from error


def _page_text(document: pdfium.PdfDocument, index: int) -> str:
    try:
        page = document[index]
        textpage = page.get_textpage()
        text = textpage.get_text_range()
        textpage.close()
        page.close()
    except pdfium.PdfiumError as error:
        raise CorruptPdf(f"page {index + 1} cannot be read ({error})") from error
    return text.replace("\r\n", "\n")


def _has_text_layer(page_texts: tuple[str, ...]) -> bool:
    visible = sum(len("".join(text.split())) for text in page_texts)
    return visible >= MIN_TEXT_CHARS_PER_PAGE * len(page_texts)
