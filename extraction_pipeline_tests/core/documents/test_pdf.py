import pytest

from extraction_pipeline.core.documents.pdf import (
    CorruptPdf,
    EmptyFile,
    EncryptedPdf,
    NotAPdf,
    PdfLimits,
    TooLarge,
    UnreadablePdf,
    read_pdf,
    render_pages_png,
    sha256_hex,
)
from extraction_pipeline_tests.hostile import zero_page_pdf
from extraction_pipeline_tests.pdfs import (
    corrupt_pdf,
    encrypted_pdf,
    good_pdf,
    scanned_pdf,
    truncated_pdf,
)


def test_reads_pages_text_and_hash_of_a_text_pdf() -> None:
    data = good_pdf(pages=3)
    info = read_pdf(data)
    assert info.page_count == 3
    assert info.sha256 == sha256_hex(data) and len(info.sha256) == 64
    assert info.size_bytes == len(data)
    assert "Invoice number: INV-07-000001" in info.page_texts[0]
    assert "Terms and conditions, page 3 of 3" in info.page_texts[2]
    assert info.has_text_layer


def test_scanned_page_has_no_text_layer_but_renders() -> None:
    data = scanned_pdf()
    info = read_pdf(data)
    assert info.page_count == 1
    assert not info.has_text_layer
    (image,) = render_pages_png(data, dpi=50)
    assert image.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("data", "error", "phrase"),
    [
        (b"", EmptyFile, "empty"),
        (b"Hello, this is a text file\n" * 3, NotAPdf, "PDF header"),
        (truncated_pdf(), CorruptPdf, "truncated"),
        (corrupt_pdf(), CorruptPdf, "corrupt"),
        (encrypted_pdf(), EncryptedPdf, "password"),
        (zero_page_pdf(), CorruptPdf, "^the PDF has no pages$"),
    ],
    ids=["empty", "not-a-pdf", "truncated", "corrupt", "encrypted", "no-pages"],
)
def test_unreadable_input_gets_its_specific_error(
    data: bytes, error: type[UnreadablePdf], phrase: str
) -> None:
    with pytest.raises(error, match=phrase) as raised:
        read_pdf(data)
    assert isinstance(raised.value, UnreadablePdf)


def test_page_limit_refuses_longer_documents() -> None:
    with pytest.raises(TooLarge, match="4 pages; the limit is 3"):
        read_pdf(good_pdf(pages=4), PdfLimits(max_pages=3))


def test_byte_limit_refuses_larger_files() -> None:
    data = good_pdf()
    with pytest.raises(TooLarge, match="EXTRACTION_MAX_BYTES"):
        read_pdf(data, PdfLimits(max_bytes=len(data) - 1))
