from datetime import UTC, datetime
from pathlib import Path

import pytest

from extraction_pipeline.core.documents.refusals import Refusal, RefusalReason
from extraction_pipeline.core.documents.registry import (
    DocumentRegistry,
    Registration,
    RegistrationOutcome,
)
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline_tests.hostile import LATIN1_NAME, LONG_NAME, UNICODE_NAME
from extraction_pipeline_tests.pdfs import good_pdf

LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


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


class RivalCommitsFirst(LocalObjectStore):
    """A store on which another process's registration of `data` commits just before this
    registration's commit point: both looked the bytes up before either committed."""

    def __init__(self, root: Path, rival_name: str, data: bytes) -> None:
        super().__init__(root)
        self.rival_name, self.data = rival_name, data
        self.rival: Registration | None = None

    def put_if_absent(self, name: str, data: bytes) -> bool:
        if name.startswith("registry/sha256/") and self.rival is None:
            rival = DocumentRegistry(LocalObjectStore(self.root))
            self.rival = rival.register(self.rival_name, self.data, now=LONG_AGO)
        return super().put_if_absent(name, data)


def test_a_registration_that_loses_the_race_adopts_the_winner(tmp_path: Path) -> None:
    store = RivalCommitsFirst(tmp_path, "sensor.pdf", good_pdf())
    late = DocumentRegistry(store).register("ingest.pdf", good_pdf())
    assert late.outcome is RegistrationOutcome.DUPLICATE_CONTENT
    assert late.record.document_key.startswith("sensor-")
    assert (late.record.file_name, late.record.aliases) == ("sensor.pdf", ("ingest.pdf",))
    assert late.record.registered_at == LONG_AGO
    assert [n.rsplit("/", 1)[-1] for n in store.list("registry/documents")] == [
        f"{late.record.document_key}.json"  # the loser's own record is gone
    ]


def test_the_same_name_losing_the_race_is_the_same_document(tmp_path: Path) -> None:
    store = RivalCommitsFirst(tmp_path, "a.pdf", good_pdf())
    late = DocumentRegistry(store).register("a.pdf", good_pdf())
    assert store.rival is not None
    # The late one had written the record (same key) before the rival committed it: one record.
    assert (store.rival.outcome, late.outcome) == (
        RegistrationOutcome.NEW,
        RegistrationOutcome.SAME_DOCUMENT,
    )
    assert store.rival.record == late.record
    assert len(list(store.list("registry/documents"))) == 1


def test_find_ignores_the_record_of_a_registration_that_never_committed(
    registry: DocumentRegistry,
) -> None:
    committed = registry.register("a.pdf", good_pdf(1)).record
    crashed = committed.model_copy(update={"document_key": "a-000000000000", "sha256": "0" * 64})
    registry.store.put("registry/documents/a-000000000000.json", crashed.model_dump_json().encode())
    assert registry.find("a.pdf") == [committed]


def refusal(name: str, reason: RefusalReason = RefusalReason.FOLDER) -> Refusal:
    return Refusal(file_name=name, reason=reason, message="why", refused_at=LONG_AGO)


@pytest.mark.parametrize("name", ["x.pdf", LONG_NAME, UNICODE_NAME, "caf\ufffd 5.pdf"])
def test_refusals_are_listed_replaced_and_cleared_by_a_registration(
    registry: DocumentRegistry, name: str
) -> None:
    registry.refuse(refusal("other.pdf"))
    registry.refuse(refusal(name))
    registry.refuse(refusal(name, RefusalReason.PERMISSION_DENIED))
    assert {(r.file_name, r.reason) for r in registry.refusals()} == {
        ("other.pdf", RefusalReason.FOLDER),
        (name, RefusalReason.PERMISSION_DENIED),
    }
    stored = [n.rsplit("/", 1)[-1] for n in registry.store.list("registry/refusals")]
    assert all(len(n) <= 60 + 1 + 12 + 5 and n.isascii() for n in stored)
    registry.register(name, good_pdf())
    assert [r.file_name for r in registry.refusals()] == ["other.pdf"]


def test_a_name_that_is_not_utf8_is_registered_as_shown(registry: DocumentRegistry) -> None:
    record = registry.register(LATIN1_NAME, good_pdf()).record
    assert record.file_name == "caf\ufffd 5.pdf"
    assert record.document_key.startswith("caf-5-")
    assert registry.find("caf\ufffd 5.pdf") == [record]
