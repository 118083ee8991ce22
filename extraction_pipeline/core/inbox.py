"""Deciding which files in the drop folder are new and ready, tick by tick.

The cursor is a watermark on the files' change time (ctime, which a rename or copy into the
folder always bumps, unlike mtime that `mv` and `cp -p` keep) plus the few names taken at or
after it. A tick therefore looks only at what arrived since the last one, and the cursor stays
small however many files the folder holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PDF_SUFFIX = ".pdf"


@dataclass(frozen=True)
class InboxEntry:
    name: str
    size_bytes: int
    mtime_ns: int
    ctime_ns: int

    @property
    def changed_ns(self) -> int:
        return max(self.mtime_ns, self.ctime_ns)


@dataclass(frozen=True)
class IntakeCursor:
    """Files with ctime below `watermark_ns` are done; `taken`: (name, ctime) at or above it."""

    watermark_ns: int = 0
    taken: frozenset[tuple[str, int]] = frozenset()

    def serialize(self) -> str:
        return json.dumps({"w": self.watermark_ns, "t": sorted([n, c] for n, c in self.taken)})

    @classmethod
    def parse(cls, raw: str | None) -> IntakeCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(int(data["w"]), frozenset((str(n), int(c)) for n, c in data["t"]))


@dataclass(frozen=True)
class IntakePlan:
    ready: tuple[InboxEntry, ...]  # stable new PDFs to take now, oldest first
    growing: tuple[InboxEntry, ...]  # changed too recently: taken on a later tick
    deferred: tuple[InboxEntry, ...]  # ready but over this tick's cap
    ignored: tuple[InboxEntry, ...]  # new files that are not PDFs
    cursor: IntakeCursor = field(default_factory=IntakeCursor)


def scan_inbox(inbox: Path) -> list[InboxEntry]:
    """List the regular files directly in the drop folder (hidden and temporary names skipped)."""
    entries: list[InboxEntry] = []
    try:
        iterator = os.scandir(inbox)
    except FileNotFoundError:
        return entries
    with iterator:
        for item in iterator:
            if item.name.startswith(".") or item.name.endswith((".tmp", ".part", ".crdownload")):
                continue
            try:
                if not item.is_file(follow_symlinks=True):
                    continue
                stat = item.stat(follow_symlinks=True)
            except FileNotFoundError:
                continue  # removed while we looked
            entries.append(InboxEntry(item.name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return entries


def plan_intake(
    entries: Iterable[InboxEntry],
    cursor: IntakeCursor,
    now_ns: int,
    settle_seconds: float,
    max_files: int,
) -> IntakePlan:
    """Split what arrived since `cursor` into ready, growing, over-cap and ignored files.

    A file is ready once it has not changed for `settle_seconds`, so a file still being copied in
    is never read half-written. The new cursor never passes a file that is still waiting.
    """
    settle_ns = int(settle_seconds * 1e9)
    arrived = sorted(
        (
            entry
            for entry in entries
            if entry.ctime_ns >= cursor.watermark_ns
            and (entry.name, entry.ctime_ns) not in cursor.taken
        ),
        key=lambda entry: (entry.ctime_ns, entry.name),
    )
    ignored = tuple(entry for entry in arrived if not entry.name.lower().endswith(PDF_SUFFIX))
    pdfs = [entry for entry in arrived if entry.name.lower().endswith(PDF_SUFFIX)]
    stable = [entry for entry in pdfs if now_ns - entry.changed_ns >= settle_ns]
    growing = tuple(entry for entry in pdfs if now_ns - entry.changed_ns < settle_ns)
    ready, deferred = tuple(stable[:max_files]), tuple(stable[max_files:])

    # The watermark stays `settle_seconds` behind `now_ns` (taken before the folder was listed),
    # so a file whose rename raced with the listing still lies above it on the next tick.
    waiting = growing + deferred
    watermark = min([entry.ctime_ns for entry in waiting] + [now_ns - settle_ns])
    watermark = max(watermark, cursor.watermark_ns)
    done = ready + ignored
    taken = {(name, ctime) for name, ctime in cursor.taken if ctime >= watermark}
    taken |= {(entry.name, entry.ctime_ns) for entry in done if entry.ctime_ns >= watermark}
    return IntakePlan(ready, growing, deferred, ignored, IntakeCursor(watermark, frozenset(taken)))
