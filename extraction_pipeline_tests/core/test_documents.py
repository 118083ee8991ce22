import pytest

from extraction_pipeline.core.documents import document_key, is_valid_document_key, slugify

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
