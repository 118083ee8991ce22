"""A drop folder full of hostile and broken input, next to good files, and what each must become."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from extraction_pipeline.core.documents.identity import display_name, document_key
from extraction_pipeline.core.documents.pdf import PdfLimits, sha256_hex
from extraction_pipeline_tests.pdfs import corrupt_pdf, encrypted_pdf, good_pdf, truncated_pdf

LIMITS = PdfLimits(max_bytes=100_000, max_pages=3)
BIG_BYTES = 150_000
# Not UTF-8: Linux keeps such names, Python reads them back with surrogates.
LATIN1_NAME = os.fsdecode(b"caf\xe9 5.pdf")
LONG_NAME = "l" * 246 + ".pdf"
UNICODE_NAME = "Rechnung M\u00fcller \u2013 M\u00e4rz \u21163.pdf"  # ü, en dash, ä, №


def zero_page_pdf() -> bytes:
    """A well-formed PDF whose page tree is empty."""
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def text_with_pdf_name() -> bytes:
    return b"just some text\n"


@dataclass(frozen=True)
class Expected:
    """`new` (detail: the partition key), `unreadable` (the error, `Kind: message`), `duplicate`
    (the key it repeats) or `refused` (`reason: message`)."""

    outcome: str
    detail: str


def new(name: str, data: bytes) -> Expected:
    return Expected("new", document_key(display_name(name), sha256_hex(data)))


def unreadable(detail: str) -> Expected:
    return Expected("unreadable", detail)


def refused(reason: str, message: str) -> Expected:
    return Expected("refused", f"{reason}: {message}")


def drop(folder: Path, name: str, data: bytes) -> None:
    """Write a file whole, then rename it into place (a temporary name short enough for a name
    of 250 characters)."""
    temporary = folder / ".incoming.part"
    temporary.write_bytes(data)
    temporary.replace(folder / name)


def drop_hostile_files(inbox: Path, outside: Path) -> dict[str, Expected]:
    """Fill `inbox` with good and hostile entries (`outside` is a folder beside it); returns each
    file name (as shown) with the outcome it must get under `LIMITS`."""
    outside.mkdir(exist_ok=True)
    secret = outside / "secret.pdf"
    secret.write_bytes(good_pdf(99))  # a readable PDF: following the link would register it
    real_inbox = os.path.realpath(inbox)
    expected: dict[str, Expected] = {}

    def add(name: str, data: bytes, outcome: Expected) -> None:
        drop(inbox, name, data)
        expected[display_name(name)] = outcome

    add("good 1.pdf", good_pdf(1), new("good 1.pdf", good_pdf(1)))
    add("good, with commas #2.pdf", good_pdf(2), new("good, with commas #2.pdf", good_pdf(2)))
    add(UNICODE_NAME, good_pdf(3), new(UNICODE_NAME, good_pdf(3)))
    add(LONG_NAME, good_pdf(4), new(LONG_NAME, good_pdf(4)))
    add(LATIN1_NAME, good_pdf(5), new(LATIN1_NAME, good_pdf(5)))
    # The same bytes under two names in the same tick (written in name order: a first).
    add("twin a.pdf", good_pdf(6), new("twin a.pdf", good_pdf(6)))
    add("twin b.pdf", good_pdf(6), Expected("duplicate", expected["twin a.pdf"].detail))
    os.symlink(inbox / "good 1.pdf", inbox / "link to good 1.pdf")  # inside: followed
    expected["link to good 1.pdf"] = Expected("duplicate", expected["good 1.pdf"].detail)

    add("empty.pdf", b"", unreadable("EmptyFile: the file is empty (0 bytes)"))
    add(
        "text.pdf",
        text_with_pdf_name(),
        unreadable(
            "NotAPdf: the file does not start with a PDF header (%PDF-); "
            "first bytes: 6a 75 73 74 20 73 6f 6d"
        ),
    )
    truncated = truncated_pdf()
    add(
        "truncated.pdf",
        truncated,
        unreadable(
            f"CorruptPdf: the PDF is truncated: no %%EOF marker at the end of its "
            f"{len(truncated):,} bytes (was it copied before it was completely written?)"
        ),
    )
    add(
        "garbage after header.pdf",
        corrupt_pdf(),
        unreadable(
            "CorruptPdf: the PDF is corrupt and cannot be parsed "
            "(Failed to load document (PDFium: Data format error).)"
        ),
    )
    add(
        "encrypted.pdf",
        encrypted_pdf(),
        unreadable(
            "EncryptedPdf: the PDF is encrypted and needs a password to open; "
            "save an unencrypted copy and drop it again"
        ),
    )
    add(
        "four pages.pdf",
        good_pdf(7, pages=4),
        unreadable("TooLarge: the PDF has 4 pages; the limit is 3 (EXTRACTION_MAX_PAGES)"),
    )
    add("no pages.pdf", zero_page_pdf(), unreadable("CorruptPdf: the PDF has no pages"))

    big = good_pdf(8) + b"%" * (BIG_BYTES - len(good_pdf(8)))
    add(
        "big.pdf",
        big,
        refused(
            "too_large",
            "the file is 150,000 bytes; the limit is 100,000 (EXTRACTION_MAX_BYTES): "
            "it was not read",
        ),
    )
    add("notes.txt", b"not a pdf", refused("not_a_pdf_name", "the name does not end in .pdf"))
    (inbox / "folder.pdf").mkdir()
    drop(inbox / "folder.pdf", "inner.pdf", good_pdf(9))  # never looked into
    expected["folder.pdf"] = refused(
        "folder", "a folder, not a file: folders in the drop folder are not looked into"
    )
    (inbox / "archive").mkdir()  # a folder not named like a PDF: passed over, no outcome
    os.symlink(secret, inbox / "passwd.pdf")
    expected["passwd.pdf"] = refused(
        "symlink_outside_inbox",
        f"a symbolic link to {os.path.realpath(secret)}, outside the drop folder: not followed",
    )
    os.symlink(inbox / "missing.pdf", inbox / "dangling.pdf")
    expected["dangling.pdf"] = refused(
        "broken_symlink",
        f"a symbolic link to {real_inbox}/missing.pdf, which cannot be opened",
    )
    os.mkfifo(inbox / "pipe.pdf")
    expected["pipe.pdf"] = refused(
        "not_a_regular_file", "not a regular file (a pipe, socket or device): it is never opened"
    )
    if os.geteuid() != 0:  # root reads whatever the mode says
        add(
            "no permission.pdf",
            good_pdf(10),
            refused(
                "permission_denied",
                "the file may not be read (Permission denied); fix its permissions",
            ),
        )
        (inbox / "no permission.pdf").chmod(0)
    return expected
