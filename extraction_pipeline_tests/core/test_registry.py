from pathlib import Path

import pytest

from extraction_pipeline.core.registry import DocumentRegistry, RegistrationOutcome
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline_tests.pdfs import good_pdf


@pytest.fixture
def registry(tmp_path: Path) -> DocumentRegistry:
    return DocumentRegistry(LocalObjectStore(tmp_path))


def test_new_document_is_stored_content_addressed(registry: DocumentRegistry) -> None:
    data = good_pdf()
    registration = registry.register("Invoice 1.pdf", data)
    record = registration.record
    assert registration.outcome is RegistrationOutcome.NEW
    assert record.document_key.startswith("invoice-1-")
    assert registry.original(record) == data
    assert registry.get(record.document_key) == record
    assert registry.get_by_sha256(record.sha256) == record
    assert record.sha256 in registry.original_uri(record)


def test_same_bytes_same_name_is_the_same_document(registry: DocumentRegistry) -> None:
    first = registry.register("a.pdf", good_pdf())
    again = registry.register("a.pdf", good_pdf())
    assert again.outcome is RegistrationOutcome.SAME_DOCUMENT
    assert again.record == first.record


def test_renamed_copy_is_an_alias_not_a_new_document(registry: DocumentRegistry) -> None:
    first = registry.register("a.pdf", good_pdf())
    renamed = registry.register("copy of a.pdf", good_pdf())
    assert renamed.outcome is RegistrationOutcome.DUPLICATE_CONTENT
    assert renamed.record.document_key == first.record.document_key
    assert registry.get(first.record.document_key).aliases == ("copy of a.pdf",)


def test_different_bytes_same_name_is_a_new_document(registry: DocumentRegistry) -> None:
    first = registry.register("a.pdf", good_pdf(1))
    second = registry.register("a.pdf", good_pdf(2))
    assert second.outcome is RegistrationOutcome.NEW
    assert second.record.document_key != first.record.document_key


def test_store_rejects_names_outside_its_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    with pytest.raises(ValueError):
        store.put("../escape", b"x")


def test_put_if_absent_creates_once_and_keeps_the_first_bytes(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    assert store.put_if_absent("index/abc", b"first") is True
    assert store.put_if_absent("index/abc", b"second") is False
    assert store.get("index/abc") == b"first"
    assert [path.name for path in (tmp_path / "index").iterdir()] == ["abc"]  # no temporaries
    assert (tmp_path / "index" / "abc").stat().st_mode & 0o777 == 0o644
