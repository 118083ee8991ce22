"""The document registry: content-addressed originals and their registrations, in the data dir.

A document is its bytes. Registering the same bytes again, under the same or another file name,
finds the existing document instead of making a second one; another name is kept as an alias.
That holds across processes (the sensor and `ingest` at once): a registration commits by creating
the SHA-256 index entry if it is absent, and a registration that finds it created meanwhile adopts
the document it names.

Files of the drop folder that never become documents are recorded here too, as refusals.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from extraction_pipeline.core.documents.identity import (
    display_name,
    document_key,
    is_valid_document_key,
    slugify,
)
from extraction_pipeline.core.documents.pdf import sha256_hex
from extraction_pipeline.core.documents.refusals import Refusal
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


def _refusal_name(file_name: str) -> str:
    # Never the raw name: a slug and a hash of it keep the path short and inside the data dir.
    shown = display_name(file_name)
    return f"registry/refusals/{slugify(shown)}-{sha256_hex(shown.encode())[:12]}.json"


class RegistryInconsistent(Exception):
    """The SHA-256 index names a document whose record is missing (the data dir was edited)."""


class DocumentRegistry:
    """Registrations and originals on top of an `ObjectStore`."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def register(self, file_name: str, data: bytes, now: datetime | None = None) -> Registration:
        """Store the bytes and register them as a document, or find the document they are.

        Safe to call from several processes at once: the same bytes make one document.
        """
        file_name = display_name(file_name)
        registration = self._register(file_name, data, now)
        self.store.delete(_refusal_name(file_name))  # the name made it in after all
        return registration

    def _register(self, file_name: str, data: bytes, now: datetime | None) -> Registration:
        sha256 = sha256_hex(data)
        existing = self.get_by_sha256(sha256)
        if existing is None:
            record = DocumentRecord(
                document_key=document_key(file_name, sha256),
                sha256=sha256,
                file_name=file_name,
                size_bytes=len(data),
                registered_at=now or datetime.now(UTC),
            )
            existing, created = self._commit(record, data)
            if created:
                return Registration(existing, RegistrationOutcome.NEW, file_name)

        if document_key(file_name, sha256) == existing.document_key:
            return Registration(existing, RegistrationOutcome.SAME_DOCUMENT, file_name)
        if file_name not in (existing.file_name, *existing.aliases):
            existing = self._add_alias(existing.document_key, file_name)
        return Registration(existing, RegistrationOutcome.DUPLICATE_CONTENT, file_name)

    def _commit(self, record: DocumentRecord, data: bytes) -> tuple[DocumentRecord, bool]:
        """Store the original and the record, then create the SHA-256 index entry: the commit
        point. Returns the committed document and whether this call committed it; when another
        registration of the same bytes committed first, that one is the document."""
        if not self.store.exists(original_name(record.sha256)):
            self.store.put_if_absent(original_name(record.sha256), data)
        key = record.document_key
        wrote_record = self.store.put_if_absent(_record_name(key), _dump(record))
        index = _hash_index_name(record.sha256)
        created = self.store.put_if_absent(index, key.encode())
        committed_key = key if created else self.store.get(index).decode()
        if committed_key != key and wrote_record:
            self.store.delete(_record_name(key))  # lost the race under another name
        if committed_key == key and wrote_record:
            return record, created
        committed = self.get(committed_key)
        if committed is None:
            raise RegistryInconsistent(
                f"registry/sha256 names {committed_key} for {record.sha256}, which has no record"
            )
        return committed, created

    def _add_alias(self, key: str, file_name: str) -> DocumentRecord:
        with self.store.lock("registry-aliases"):  # read-modify-write across processes
            record = self.get(key)
            if record is None:
                raise RegistryInconsistent(f"document {key} has no record")
            if file_name not in (record.file_name, *record.aliases):
                record = record.model_copy(update={"aliases": (*record.aliases, file_name)})
                self.store.put(_record_name(key), _dump(record))
            return record

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
        return [
            record
            for record in candidates
            if record is not None and query == record.file_name and self._is_committed(record)
        ]

    def _is_committed(self, record: DocumentRecord) -> bool:
        """False for the record of a registration that crashed or lost before its commit."""
        committed = self.get_by_sha256(record.sha256)
        return committed is not None and committed.document_key == record.document_key

    def refuse(self, refusal: Refusal) -> None:
        """Record that a file of the drop folder does not become a document, and why. A later
        refusal of the same name replaces it; registering a document under the name removes it."""
        self.store.put(_refusal_name(refusal.file_name), refusal.model_dump_json(indent=2).encode())

    def refusals(self) -> list[Refusal]:
        """The standing refusals, oldest first."""
        found = [
            Refusal.model_validate_json(self.store.get(name))
            for name in self.store.list("registry/refusals")
        ]
        return sorted(found, key=lambda refusal: (refusal.refused_at, refusal.file_name))

    def original(self, record: DocumentRecord) -> bytes:
        """The original bytes of a registered document."""
        return self.store.get(original_name(record.sha256))

    def original_uri(self, record: DocumentRecord) -> str:
        return self.store.uri(original_name(record.sha256))


def _dump(record: DocumentRecord) -> bytes:
    return record.model_dump_json(indent=2).encode()
