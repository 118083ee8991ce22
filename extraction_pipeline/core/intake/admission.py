"""Turning the ready files of an intake plan into registered documents, refusals and run decisions.

What is a document and what is refused: a file becomes a document when the pipeline holds its
bytes, since its identity is their hash; an empty file, text under a `.pdf` name, a truncated,
corrupt, encrypted, page-less or over-long PDF are documents whose source run fails with the
specific reason. What is never read, or cannot be, is refused and recorded in the registry with
the reason: names that are not a PDF's, folders, links out of the drop folder, pipes, files that
may not be read, and files over the byte limit (refused unread, so no file can exhaust memory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from extraction_pipeline.core.documents.identity import display_name
from extraction_pipeline.core.documents.pdf import PdfLimits, UnreadablePdf, check_pdf, sha256_hex
from extraction_pipeline.core.documents.refusals import Refusal, RefusalReason
from extraction_pipeline.core.documents.registry import (
    DocumentRegistry,
    Registration,
    RegistrationOutcome,
)
from extraction_pipeline.core.intake.inbox import (
    InboxEntry,
    InboxFileChanged,
    InboxFileRefused,
    InboxSource,
    IntakeCursor,
    IntakePlan,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeDecision:
    """What a tick does. Keys are partition keys; the rest are file names, for the tick's log."""

    new_keys: tuple[str, ...] = ()  # registered now and readable: add as partitions and extract
    unreadable: tuple[tuple[str, str], ...] = ()  # registered now, unreadable: (key, reason)
    restored_keys: tuple[str, ...] = ()  # registered before, partition missing: add and run again
    known: tuple[str, ...] = ()  # same bytes, same name, already a partition: nothing to do
    duplicates: tuple[tuple[str, str], ...] = ()  # (file name, key of the document it repeats)
    vanished: tuple[str, ...] = ()  # listed, then gone before it could be read
    refused: tuple[Refusal, ...] = ()  # never documents; recorded in the registry
    growing: tuple[str, ...] = ()  # still changing, or changed while read: a later tick
    retrying: tuple[tuple[str, str], ...] = ()  # could not be read just now: (name, error)
    deferred: tuple[str, ...] = ()  # over the per-tick cap: next tick
    cursor: IntakeCursor = field(default_factory=IntakeCursor)

    @property
    def unreadable_keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.unreadable)

    @property
    def keys_to_add(self) -> tuple[str, ...]:
        """In this order, so each group is a contiguous range of partitions."""
        return self.new_keys + self.unreadable_keys + self.restored_keys

    def summary(self) -> str:
        counts = {
            "new": len(self.new_keys),
            "unreadable": len(self.unreadable),
            "restored": len(self.restored_keys),
            "already known": len(self.known),
            "duplicate content": len(self.duplicates),
            "refused": len(self.refused),
            "still growing": len(self.growing),
            "read errors, retried next tick": len(self.retrying),
            "over the cap": len(self.deferred),
            "vanished": len(self.vanished),
        }
        parts = [f"{count} {label}" for label, count in counts.items() if count]
        return ", ".join(parts) or "no new files"


def take_documents(
    plan: IntakePlan,
    inbox: InboxSource,
    registry: DocumentRegistry,
    partition_exists: Callable[[str], bool],
    limits: PdfLimits | None = None,
) -> IntakeDecision:
    """Register every ready file of `plan` (storing its bytes), record refusals, decide what to run.

    Identity is the content: bytes seen before never make a second document, whatever the name.
    New documents are checked for readability (cheaply: opened, not read) so that an unreadable
    one is run on its own and cannot hold up the extraction of its neighbours. A file that
    changed while it was read, or could not be read for a passing reason, is kept in the cursor
    for the next tick.
    """
    limits = limits or PdfLimits()
    new: list[str] = []
    unreadable: list[tuple[str, str]] = []
    restored: list[str] = []
    known: list[str] = []
    duplicates: list[tuple[str, str]] = []
    vanished: list[str] = []
    refused: list[Refusal] = list(plan.refused)
    growing: list[str] = [display_name(entry.name) for entry in plan.growing]
    retrying: list[tuple[str, str]] = []
    held: set[str] = set()
    with ThreadPoolExecutor(INTAKE_THREADS, thread_name_prefix="intake") as pool:
        for chunk in _chunks(plan.ready):
            readable: list[tuple[InboxEntry, bytes]] = []
            reads = pool.map(lambda entry: _read(inbox, entry, limits.max_bytes), chunk)
            for entry, data in zip(chunk, reads, strict=True):
                name = display_name(entry.name)
                if isinstance(data, bytes):
                    readable.append((entry, data))
                elif isinstance(data, FileNotFoundError):
                    vanished.append(name)
                elif isinstance(data, InboxFileChanged):
                    log.info("%s: %s; taken on a later tick", name, data)
                    growing.append(name)
                    held.add(entry.name)
                elif isinstance(data, InboxFileRefused):
                    refused.append(_refusal(name, data.reason, str(data)))
                elif isinstance(data, PermissionError):
                    message = f"the file may not be read ({data.strerror}); fix its permissions"
                    refused.append(_refusal(name, RefusalReason.PERMISSION_DENIED, message))
                else:  # any other OSError: a passing reason, perhaps
                    retrying.append((name, f"{type(data).__name__}: {data.strerror or data}"))
                    held.add(entry.name)
            registrations = _register_all(pool, registry, readable)
            for (entry, data), registration in zip(readable, registrations, strict=True):
                name = display_name(entry.name)
                key = registration.record.document_key
                if registration.outcome is RegistrationOutcome.NEW:
                    try:
                        check_pdf(data, limits)
                    except UnreadablePdf as error:
                        unreadable.append((key, f"{type(error).__name__}: {error}"))
                    else:
                        new.append(key)
                elif registration.outcome is RegistrationOutcome.DUPLICATE_CONTENT:
                    duplicates.append((name, key))
                elif key in {*new, *restored, *(k for k, _ in unreadable)} or partition_exists(key):
                    known.append(name)
                else:
                    restored.append(key)
    for refusal in refused:
        registry.refuse(refusal)
    return IntakeDecision(
        new_keys=tuple(new),
        unreadable=tuple(unreadable),
        restored_keys=tuple(restored),
        known=tuple(known),
        duplicates=tuple(duplicates),
        vanished=tuple(vanished),
        refused=tuple(refused),
        growing=tuple(growing),
        retrying=tuple(retrying),
        deferred=tuple(display_name(entry.name) for entry in plan.deferred),
        cursor=replace(plan.cursor, retry=frozenset(held)),
    )


_ReadError = OSError | InboxFileChanged | InboxFileRefused


def _read(inbox: InboxSource, entry: InboxEntry, max_bytes: int) -> bytes | _ReadError:
    """The file's bytes, or the error that kept them."""
    try:
        return inbox.read(entry, max_bytes)
    except (OSError, InboxFileChanged, InboxFileRefused) as error:
        return error


def _register_all(
    pool: ThreadPoolExecutor, registry: DocumentRegistry, files: list[tuple[InboxEntry, bytes]]
) -> list[Registration]:
    """Register `files` in their order's meaning: of files with the same bytes the first is the
    document, the rest duplicates. Storing is mostly waiting for the disk (or the object store),
    so the first file of each content is registered in parallel, the others after them."""
    first: dict[str, int] = {}
    for index, (_, data) in enumerate(files):
        first.setdefault(sha256_hex(data), index)
    done: dict[int, Registration] = dict(
        zip(
            first.values(),
            pool.map(lambda i: registry.register(files[i][0].name, files[i][1]), first.values()),
            strict=True,
        )
    )
    for index, (entry, data) in enumerate(files):
        if index not in done:
            done[index] = registry.register(entry.name, data)
    return [done[index] for index in range(len(files))]


def _chunks(entries: tuple[InboxEntry, ...]) -> Iterator[list[InboxEntry]]:
    """`entries` in order, a few at a time: at most INTAKE_THREADS files and CHUNK_BYTES (by
    their listed size; a larger file goes alone), so a tick holds only that much in memory."""
    chunk: list[InboxEntry] = []
    size = 0
    for entry in entries:
        if chunk and (len(chunk) == INTAKE_THREADS or size + entry.size_bytes > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry.size_bytes
    if chunk:
        yield chunk


# Files read and stored at once: each is a few small writes, mostly waiting for the disk.
INTAKE_THREADS = 8
CHUNK_BYTES = 64 * 1024 * 1024


def _refusal(file_name: str, reason: RefusalReason, message: str) -> Refusal:
    return Refusal(
        file_name=file_name, reason=reason, message=message, refused_at=datetime.now(UTC)
    )
