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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from extraction_pipeline.core.documents.identity import display_name
from extraction_pipeline.core.documents.pdf import PdfLimits, UnreadablePdf, check_pdf
from extraction_pipeline.core.documents.refusals import Refusal, RefusalReason
from extraction_pipeline.core.documents.registry import DocumentRegistry, RegistrationOutcome
from extraction_pipeline.core.intake.inbox import (
    InboxEntry,
    InboxFileChanged,
    InboxFileRefused,
    IntakeCursor,
    IntakePlan,
    read_inbox_file,
)

log = logging.getLogger(__name__)

InboxReader = Callable[[Path, InboxEntry, int], bytes]
"""Reads a listed file given the inbox, the entry and the byte limit (see `read_inbox_file`)."""


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
    inbox: Path,
    registry: DocumentRegistry,
    partition_exists: Callable[[str], bool],
    limits: PdfLimits | None = None,
    read: InboxReader = read_inbox_file,
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
    for entry in plan.ready:
        name = display_name(entry.name)
        try:
            data = read(inbox, entry, limits.max_bytes)
        except FileNotFoundError:
            vanished.append(name)
            continue
        except InboxFileChanged as error:
            log.info("%s: %s; taken on a later tick", name, error)
            growing.append(name)
            held.add(entry.name)
            continue
        except InboxFileRefused as error:
            refused.append(_refusal(name, error.reason, str(error)))
            continue
        except PermissionError as error:
            message = f"the file may not be read ({error.strerror}); fix its permissions"
            refused.append(_refusal(name, RefusalReason.PERMISSION_DENIED, message))
            continue
        except OSError as error:
            retrying.append((name, f"{type(error).__name__}: {error.strerror or error}"))
            held.add(entry.name)
            continue
        registration = registry.register(entry.name, data)
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


def _refusal(file_name: str, reason: RefusalReason, message: str) -> Refusal:
    return Refusal(
        file_name=file_name, reason=reason, message=message, refused_at=datetime.now(UTC)
    )
