"""Archiving settled documents: which partitions to remove so the live set stays bounded.

Dagster evaluates sensors, schedules, automation conditions and UI pages over every partition
of `documents`; with one partition per document ever seen, that cost grows without end. A
settled document (extracted, waiting for review, or a dead letter) needs nothing more from
them, so once it was registered long enough ago its partition can go: its history stays in the
event log (`history` reads it by key), its rows stay in the tables, its original and record in
the data dir. Dropping the same file again brings the partition back and reuses the stored
record (no model call).

Partitions are kept in registration order, so the oldest documents come first. Each pass looks
at one window of the live keys from a cursor (the number of live keys before it that were kept),
archives the settled ones old enough, and stops at the first one too young: every key after it
is younger still, so the next pass starts again from the head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from extraction_pipeline.core.operations.lifecycle import DocumentState

SETTLED = frozenset(
    {DocumentState.EXTRACTED, DocumentState.NEEDS_REVIEW, DocumentState.DEAD_LETTER}
)
WINDOW = 500  # live keys looked at per pass: bounds a sensor tick and the daemon's removals


@dataclass(frozen=True)
class ArchiveCursor:
    """Where the next pass starts: this many live keys at the head were looked at and kept."""

    position: int = 0

    @classmethod
    def parse(cls, text: str | None) -> ArchiveCursor:
        try:
            return cls(max(0, int(text or 0)))
        except ValueError:
            return cls()

    def serialize(self) -> str:
        return str(self.position)


@dataclass(frozen=True)
class ArchivePlan:
    archive: tuple[str, ...]  # partitions to remove, in partition order
    cursor: ArchiveCursor  # for the next pass, once `archive` is removed
    start: int  # index of the first key looked at
    examined: int
    kept: dict[str, int] = field(default_factory=dict)  # state -> documents kept in the window
    wrapped: bool = False  # the pass reached the young end (or the last key): start again

    def summary(self) -> str:
        kept = ", ".join(f"{n} {state}" for state, n in sorted(self.kept.items())) or "none"
        return f"archived {len(self.archive)} of {self.examined} examined; kept: {kept}"


def window(cursor: ArchiveCursor, live: int, size: int = WINDOW) -> tuple[int, int]:
    """The slice of the live keys one pass looks at."""
    start = cursor.position if cursor.position < live else 0
    return start, min(live, start + size)


def plan_archive(
    start: int,
    keys: Sequence[str],
    states: Mapping[str, DocumentState],
    registered_at: Mapping[str, datetime | None],
    now: datetime,
    after: timedelta,
    live: int,
) -> ArchivePlan:
    """Decide one pass over `keys`, the live keys from index `start` (of `live` in all).

    A key the registry does not know (added by hand in the UI, say) is kept: nothing says when
    it came or that its history is complete."""
    archive: list[str] = []
    kept: dict[str, int] = {}
    for index, key in enumerate(keys):
        state = states.get(key)
        registered = registered_at.get(key)
        if registered is not None and now - registered < after:
            return ArchivePlan(tuple(archive), ArchiveCursor(), start, index, kept, wrapped=True)
        if registered is not None and state in SETTLED:
            archive.append(key)
            continue
        name = "unknown" if registered is None or state is None else state.value
        kept[name] = kept.get(name, 0) + 1
    wrapped = start + len(keys) >= live
    cursor = ArchiveCursor() if wrapped else ArchiveCursor(start + sum(kept.values()))
    return ArchivePlan(tuple(archive), cursor, start, len(keys), kept, wrapped)
