import pytest

from extraction_pipeline.core.documents.identity import (
    display_name,
    document_key,
    is_valid_document_key,
    slugify,
)
from extraction_pipeline_tests.hostile import LATIN1_NAME, LONG_NAME, UNICODE_NAME

SHA = "ab12cd34ef56" + "0" * 52


@pytest.mark.parametrize(
    ("file_name", "slug"),
    [
        ("Invoice 2026-01.pdf", "invoice-2026-01"),
        ("ACME, Inc. | March [final].PDF", "acme-inc.-march-final"),
        ("Rechnung Müller…ü.pdf", "rechnung-muller.u"),
        ("...hidden..pdf", "hidden"),
        ("€€€.pdf", "document"),
        ("a" * 200 + ".pdf", "a" * 60),
    ],
)
def test_slug_is_readable_and_selection_safe(file_name: str, slug: str) -> None:
    assert slugify(file_name) == slug


def test_key_is_slug_plus_short_content_hash() -> None:
    key = document_key("ACME, Inc. | March.pdf", SHA)
    assert key == "acme-inc.-march-ab12cd34ef56"
    assert is_valid_document_key(key)


def test_renamed_file_keeps_its_hash_suffix() -> None:
    assert document_key("a.pdf", SHA).endswith(SHA[:12])
    assert document_key("b.pdf", SHA).endswith(SHA[:12])


@pytest.mark.parametrize("key", ["a,b", "a...b", "a b", "a|b", "-x", ""])
def test_unsafe_keys_are_invalid(key: str) -> None:
    assert not is_valid_document_key(key)


@pytest.mark.parametrize(
    ("file_name", "key"),
    [
        ("good, with commas #2.pdf", "good-with-commas-2-ab12cd34ef56"),
        (UNICODE_NAME, "rechnung-muller-marz-no3-ab12cd34ef56"),
        (LONG_NAME, "l" * 60 + "-ab12cd34ef56"),
        (LATIN1_NAME, "caf-5-ab12cd34ef56"),
        ("../../etc/passwd.pdf", "passwd-ab12cd34ef56"),
        ("/abs/..\\..\\x.pdf", "x-ab12cd34ef56"),
        ("#.pdf", "document-ab12cd34ef56"),
    ],
    ids=["commas-hash", "unicode", "250-chars", "not-utf8", "dot-dot", "backslashes", "only-hash"],
)
def test_hostile_names_make_safe_short_keys(file_name: str, key: str) -> None:
    assert document_key(file_name, SHA) == key
    assert is_valid_document_key(key) and "/" not in key


@pytest.mark.parametrize(
    ("file_name", "shown"),
    [
        ("Invoice 1.pdf", "Invoice 1.pdf"),
        ("Rechnung Müller.pdf", "Rechnung Müller.pdf"),
        (LATIN1_NAME, "caf\ufffd 5.pdf"),
        ("\ud800.pdf", "?.pdf"),
    ],
)
def test_display_name_is_valid_unicode(file_name: str, shown: str) -> None:
    assert display_name(file_name) == shown
    shown.encode("utf-8")  # storable and loggable
