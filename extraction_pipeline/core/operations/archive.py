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

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
    kept: dict[str, int] = field(default_factory=dict)  # reason -> documents kept
    wrapped: bool = False  # the pass reached the young end (or the last key): start again

    def summary(self) -> str:
        kept = ", ".join(f"{n} {reason}" for reason, n in sorted(self.kept.items())) or "none"
        return f"archived {len(self.archive)} of {self.examined} examined; kept: {kept}"


def window(cursor: ArchiveCursor, live: int, size: int = WINDOW) -> tuple[int, int]:
    """The slice of the live keys one pass looks at."""
    start = cursor.position if cursor.position < live else 0
    return start, min(live, start + size)


def plan_archive(
    start: int,
    keys: Sequence[str],
    settled: Collection[str],
    busy: Collection[str],
    registered_at: Mapping[str, datetime | None],
    now: datetime,
    after: timedelta,
    live: int,
) -> ArchivePlan:
    """Decide one pass over `keys`, the live keys from index `start` (of `live` in all).

    `settled`: extracted documents (needing review or not) and dead letters; `busy`: documents
    some unfinished run or open batch holds (a settled one being run again stays). Kept, by
    reason: "busy", "unsettled" (new, or failed and due for a retry), "unregistered" (a key
    added by hand in the UI: nothing says when it came or that its history is complete)."""
    archive: list[str] = []
    kept: dict[str, int] = {}
    for index, key in enumerate(keys):
        registered = registered_at.get(key)
        if registered is not None and now - registered < after:
            return ArchivePlan(tuple(archive), ArchiveCursor(), start, index, kept, wrapped=True)
        if registered is None:
            reason = "unregistered"
        elif key in busy:
            reason = "busy"
        elif key not in settled:
            reason = "unsettled"
        else:
            archive.append(key)
            continue
        kept[reason] = kept.get(reason, 0) + 1
    wrapped = start + len(keys) >= live
    cursor = ArchiveCursor() if wrapped else ArchiveCursor(start + sum(kept.values()))
    return ArchivePlan(tuple(archive), cursor, start, len(keys), kept, wrapped)
