"""Turning the ready files of an intake plan into registered documents and run decisions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extraction_pipeline.core.inbox import IntakePlan
from extraction_pipeline.core.pdf import PdfLimits, UnreadablePdf, check_pdf
from extraction_pipeline.core.registry import DocumentRegistry, RegistrationOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeDecision:
    """What a tick does. Keys are partition keys; the rest are file names, for the tick's log."""

    new_keys: tuple[str, ...]  # registered now and readable: add as partitions and extract
    unreadable: tuple[tuple[str, str], ...]  # registered now, unreadable: (key, reason)
    restored_keys: tuple[str, ...]  # registered before, partition missing: add and run again
    known: tuple[str, ...]  # same bytes, same name, already a partition: nothing to do
    duplicates: tuple[tuple[str, str], ...]  # (file name, key of the document it repeats)
    vanished: tuple[str, ...]  # listed, then gone before it could be read
    ignored: tuple[str, ...]  # not PDFs
    growing: tuple[str, ...]  # still changing: next tick
    deferred: tuple[str, ...]  # over the per-tick cap: next tick

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
            "not PDF": len(self.ignored),
            "still growing": len(self.growing),
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
) -> IntakeDecision:
    """Register every ready file of `plan` (storing its bytes) and decide what to run.

    Identity is the content: bytes seen before never make a second document, whatever the name.
    New documents are checked for readability (cheaply: opened, not read) so that an unreadable
    one is run on its own and cannot hold up the extraction of its neighbours.
    """
    new: list[str] = []
    unreadable: list[tuple[str, str]] = []
    restored: list[str] = []
    known: list[str] = []
    duplicates: list[tuple[str, str]] = []
    vanished: list[str] = []
    for entry in plan.ready:
        try:
            data = (inbox / entry.name).read_bytes()
        except FileNotFoundError:
            vanished.append(entry.name)
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
            duplicates.append((entry.name, key))
        elif key in {*new, *restored, *(k for k, _ in unreadable)} or partition_exists(key):
            known.append(entry.name)
        else:
            restored.append(key)
    return IntakeDecision(
        new_keys=tuple(new),
        unreadable=tuple(unreadable),
        restored_keys=tuple(restored),
        known=tuple(known),
        duplicates=tuple(duplicates),
        vanished=tuple(vanished),
        ignored=tuple(entry.name for entry in plan.ignored),
        growing=tuple(entry.name for entry in plan.growing),
        deferred=tuple(entry.name for entry in plan.deferred),
    )
