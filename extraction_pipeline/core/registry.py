"""The document registry: content-addressed originals and their registrations, in the data dir.

A document is its bytes. Registering the same bytes again, under the same or another file name,
finds the existing document instead of making a second one; another name is kept as an alias.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from extraction_pipeline.core.documents import document_key, is_valid_document_key, slugify
from extraction_pipeline.core.pdf import sha256_hex
from extraction_pipeline.core.store import ObjectStore


class DocumentRecord(BaseModel):
    """A registered document, as stored under `registry/documents/<key>.json`."""

    model_config = ConfigDict(frozen=True)

    document_key: str
    sha256: str
    file_name: str
    size_bytes: int
    registered_at: datetime
    aliases: tuple[str, ...] = ()


class RegistrationOutcome(enum.StrEnum):
    NEW = "new"
    SAME_DOCUMENT = "same_document"  # these bytes under this name were registered before
    DUPLICATE_CONTENT = "duplicate_content"  # these bytes are known under another name


@dataclass(frozen=True)
class Registration:
    record: DocumentRecord
    outcome: RegistrationOutcome
    file_name: str


def original_name(sha256: str) -> str:
    return f"originals/sha256/{sha256[:2]}/{sha256}.pdf"


def _record_name(key: str) -> str:
    return f"registry/documents/{key}.json"


def _hash_index_name(sha256: str) -> str:
    return f"registry/sha256/{sha256[:2]}/{sha256}"


class DocumentRegistry:
    """Registrations and originals on top of an `ObjectStore`."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def register(self, file_name: str, data: bytes, now: datetime | None = None) -> Registration:
        """Store the bytes and register them as a document, or find the document they are."""
        sha256 = sha256_hex(data)
        existing = self.get_by_sha256(sha256)
        if existing is not None:
            if document_key(file_name, sha256) == existing.document_key:
                return Registration(existing, RegistrationOutcome.SAME_DOCUMENT, file_name)
            if file_name != existing.file_name and file_name not in existing.aliases:
                existing = existing.model_copy(update={"aliases": (*existing.aliases, file_name)})
                self.store.put(_record_name(existing.document_key), _dump(existing))
            return Registration(existing, RegistrationOutcome.DUPLICATE_CONTENT, file_name)

        record = DocumentRecord(
            document_key=document_key(file_name, sha256),
            sha256=sha256,
            file_name=file_name,
            size_bytes=len(data),
            registered_at=now or datetime.now(UTC),
        )
        # Original first, index last: the index entry is the commit point of a registration.
        if not self.store.exists(original_name(sha256)):
            self.store.put(original_name(sha256), data)
        self.store.put(_record_name(record.document_key), _dump(record))
        self.store.put(_hash_index_name(sha256), record.document_key.encode())
        return Registration(record, RegistrationOutcome.NEW, file_name)

    def get(self, key: str) -> DocumentRecord | None:
        try:
            return DocumentRecord.model_validate_json(self.store.get(_record_name(key)))
        except FileNotFoundError:
            return None

    def get_by_sha256(self, sha256: str) -> DocumentRecord | None:
        try:
            key = self.store.get(_hash_index_name(sha256)).decode()
        except FileNotFoundError:
            return None
        return self.get(key)

    def find(self, query: str) -> list[DocumentRecord]:
        """Documents matching a partition key, a SHA-256 (or a prefix of at least 8 hex digits)
        or the file name a document was first registered under."""
        exact = self.get(query) if is_valid_document_key(query) else None
        if exact is not None:
            return [exact]
        lowered = query.lower()
        if len(lowered) >= 8 and all(c in "0123456789abcdef" for c in lowered):
            folder = f"registry/sha256/{lowered[:2]}"
            matches = [
                n for n in self.store.list(folder) if n.rsplit("/", 1)[-1].startswith(lowered)
            ]
            found = [self.get_by_sha256(name.rsplit("/", 1)[-1]) for name in matches]
            if found:
                return [record for record in found if record is not None]
        prefix = f"registry/documents/{slugify(query)}-"
        candidates = (
            self.get(name.rsplit("/", 1)[-1].removesuffix(".json"))
            for name in self.store.list("registry/documents")
            if name.startswith(prefix)
        )
        return [record for record in candidates if record is not None and query == record.file_name]

    def original(self, record: DocumentRecord) -> bytes:
        """The original bytes of a registered document."""
        return self.store.get(original_name(record.sha256))

    def original_uri(self, record: DocumentRecord) -> str:
        return self.store.uri(original_name(record.sha256))


def _dump(record: DocumentRecord) -> bytes:
    return record.model_dump_json(indent=2).encode()
