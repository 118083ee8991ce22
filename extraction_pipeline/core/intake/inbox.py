"""The drop folder: what is in it, which files are new and ready tick by tick, and reading them.

A drop folder is an `InboxSource`: a local folder (`LocalInbox`, below) or an S3 prefix
(`core.intake.s3_inbox`); `core.intake.sources.open_inbox` picks by EXTRACTION_INBOX. Both
list into `InboxEntry`s planned by the same cursor logic.

The cursor is a watermark on the files' change time (ctime, which a rename or copy into the
folder always bumps, unlike mtime that `mv` and `cp -p` keep) plus the few names taken at or
after it. A tick therefore looks only at what arrived since the last one, and the cursor stays
small however many files the folder holds.

Regular files named `*.pdf` (any case) directly in the folder are taken. Everything else that
arrives is refused with a reason (a name that is not a PDF's, a folder named `x.pdf`, a symbolic
link leading out of the folder, a pipe), so nothing is dropped silently. Folders not named like a
PDF are not the pipeline's business and are passed over. A file is read through one descriptor,
never through a link out of the folder, and only if it is still the file that was listed.
"""

from __future__ import annotations

import enum
import errno
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from extraction_pipeline.core.documents.identity import display_name
from extraction_pipeline.core.documents.refusals import Refusal, RefusalReason

PDF_SUFFIX = ".pdf"
_READ_CHUNK = 1 << 20

log = logging.getLogger(__name__)


class EntryKind(enum.StrEnum):
    FILE = "file"  # a regular file, or a link to one inside the folder
    FOLDER = "folder"
    SYMLINK_OUTSIDE = "symlink_outside"  # a symbolic link that leads out of the folder
    BROKEN_SYMLINK = "broken_symlink"
    SPECIAL = "special"  # a pipe, socket or device


FOLDER_MESSAGE = "a folder, not a file: folders in the drop folder are not looked into"
SPECIAL_MESSAGE = "not a regular file (a pipe, socket or device): it is never opened"


def outside_message(target: str) -> str:
    return f"a symbolic link to {display_name(target)}, outside the drop folder: not followed"


@dataclass(frozen=True)
class InboxEntry:
    name: str
    size_bytes: int
    mtime_ns: int
    ctime_ns: int
    kind: EntryKind = EntryKind.FILE
    link_target: str = ""  # where a symbolic link leads, resolved
    version: str = ""  # an object's ETag (S3): reading checks it is still the object listed

    @property
    def changed_ns(self) -> int:
        return max(self.mtime_ns, self.ctime_ns)


@dataclass(frozen=True)
class IntakeCursor:
    """Files with ctime below `watermark_ns` are done; `taken`: (name, ctime) at or above it;
    `retry`: names found changing when read, looked at again whatever their ctime."""

    watermark_ns: int = 0
    taken: frozenset[tuple[str, int]] = frozenset()
    retry: frozenset[str] = frozenset()

    def serialize(self) -> str:
        return json.dumps(
            {
                "w": self.watermark_ns,
                "t": sorted([n, c] for n, c in self.taken),
                "r": sorted(self.retry),
            }
        )

    @classmethod
    def parse(cls, raw: str | None) -> IntakeCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(
            int(data["w"]),
            frozenset((str(n), int(c)) for n, c in data["t"]),
            frozenset(str(n) for n in data.get("r", ())),
        )


@dataclass(frozen=True)
class IntakePlan:
    ready: tuple[InboxEntry, ...]  # stable new PDFs to take now, oldest first
    growing: tuple[InboxEntry, ...]  # changed too recently: taken on a later tick
    deferred: tuple[InboxEntry, ...]  # ready but over this tick's cap
    refused: tuple[Refusal, ...]  # new entries that will not become documents
    cursor: IntakeCursor = field(default_factory=IntakeCursor)


class InboxSource(Protocol):
    """A drop folder: list it, read a listed file, drop a file into it."""

    location: str  # for descriptions and logs
    # How far behind the newest change the watermark stays at least: 0 for a local folder
    # (ctime is the arrival), more where a listed time can lag the arrival (see s3_inbox).
    lag_seconds: float

    def scan(self) -> list[InboxEntry]: ...

    def read(self, entry: InboxEntry, max_bytes: int) -> bytes:
        """The listed file's bytes; see `read_inbox_file` for the errors."""
        ...

    def version(self) -> int | None:
        """Changes when something arrives, cheaply (a tick watches it); None: not watchable."""
        ...

    def drop(self, name: str, data: bytes) -> None:
        """Put a file in, whole at once (samples, tests)."""
        ...


class LocalInbox:
    """A drop folder on the local file system."""

    lag_seconds = 0.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.location = str(folder)

    def scan(self) -> list[InboxEntry]:
        return scan_inbox(self.folder)

    def read(self, entry: InboxEntry, max_bytes: int) -> bytes:
        return read_inbox_file(self.folder, entry, max_bytes)

    def version(self) -> int | None:
        return _folder_version(self.folder)

    def drop(self, name: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f".{name}.part"  # hidden: never listed half-written
        temporary.write_bytes(data)
        temporary.replace(self.folder / name)


def plan_tick(
    inbox: InboxSource | Path,
    cursor: IntakeCursor,
    settle_seconds: float,
    max_files: int,
    watch_seconds: float = 0.0,
    clock: Callable[[], int] = time.time_ns,
    sleep: Callable[[float], None] = time.sleep,
) -> IntakePlan:
    """`plan_intake` over the inbox, for one sensor tick.

    A tick that finds nothing new watches the folder for up to `watch_seconds` (one `stat` of it
    every WATCH_POLL_SECONDS: a file renamed or created in it changes its mtime) and plans again
    when it changes, so a file dropped between ticks is not left for the next one. Files still
    settling are waited for, once, until the youngest has settled, rather than left to the next
    tick a whole sensor interval later; one still changing after that waits for the next tick as
    before, as do files that would settle only after SETTLE_WAIT_MAX_SECONDS (a long settle time
    must not hold a tick that long).
    """
    source = LocalInbox(inbox) if isinstance(inbox, Path) else inbox
    deadline_ns = clock() + int(watch_seconds * 1e9)
    plan = _plan_now(source, cursor, settle_seconds, max_files, clock)
    seen = source.version()
    while seen is not None and not _anything_new(plan) and clock() < deadline_ns:
        sleep(WATCH_POLL_SECONDS)
        if (version := source.version()) != seen:
            seen = version
            plan = _plan_now(source, cursor, settle_seconds, max_files, clock)
    if not plan.growing:
        return plan
    now_ns = clock()
    youngest_ns = max(entry.changed_ns for entry in plan.growing)
    wait = (youngest_ns + settle_seconds * 1e9 - now_ns) / 1e9
    if wait > SETTLE_WAIT_MAX_SECONDS:
        return plan
    sleep(max(wait, 0.0) + SETTLE_MARGIN_SECONDS)
    return _plan_now(source, cursor, settle_seconds, max_files, clock)


def _plan_now(
    source: InboxSource,
    cursor: IntakeCursor,
    settle_seconds: float,
    max_files: int,
    clock: Callable[[], int],
) -> IntakePlan:
    now_ns = clock()  # before listing: see plan_intake
    return plan_intake(source.scan(), cursor, now_ns, settle_seconds, max_files, source.lag_seconds)


def _anything_new(plan: IntakePlan) -> bool:
    return bool(plan.ready or plan.growing or plan.deferred or plan.refused)


def _folder_version(inbox: Path) -> int | None:
    try:
        return os.stat(inbox).st_mtime_ns
    except OSError:
        return None


# The watch looks at the folder's mtime this often: a stat call, nothing when idle.
WATCH_POLL_SECONDS = 0.2
# A tick waits for settling files only if they settle within this long.
SETTLE_WAIT_MAX_SECONDS = 2.0
# A file settled by the clock is looked at a little after, so it is past `settle_seconds`.
SETTLE_MARGIN_SECONDS = 0.05


def scan_inbox(inbox: Path) -> list[InboxEntry]:
    """List what is directly in the drop folder (hidden and temporary names skipped), without
    following symbolic links that lead out of it."""
    entries: list[InboxEntry] = []
    try:
        iterator = os.scandir(inbox)
    except FileNotFoundError:
        return entries
    folder = os.path.realpath(inbox)
    with iterator:
        for item in iterator:
            if is_hidden(item.name):
                continue
            try:
                entries.append(_entry(item, folder))
            except FileNotFoundError:
                continue  # removed while we looked
            except OSError as error:  # listed on a later tick, as it is not taken
                log.warning("%s: cannot be listed (%s)", display_name(item.name), error)
    return entries


def is_hidden(name: str) -> bool:
    """Hidden and temporary names (a copy or upload in progress) are not looked at."""
    return name.startswith(".") or name.endswith((".tmp", ".part", ".crdownload"))


def _entry(item: os.DirEntry[str], folder: str) -> InboxEntry:
    if not item.is_symlink():
        return _make_entry(item.name, item.stat(follow_symlinks=False))
    target = os.path.realpath(item.path)
    link = item.stat(follow_symlinks=False)
    if not is_inside(folder, target):
        return _make_entry(item.name, link, EntryKind.SYMLINK_OUTSIDE, target)
    try:
        followed = _make_entry(item.name, item.stat(follow_symlinks=True), link_target=target)
    except OSError:  # no target, or a loop of links
        return _make_entry(item.name, link, EntryKind.BROKEN_SYMLINK, target)
    # Arrived when the link was made, though its target may be older: the later change time.
    return replace(followed, ctime_ns=max(followed.ctime_ns, link.st_ctime_ns))


def _make_entry(
    name: str, status: os.stat_result, kind: EntryKind | None = None, link_target: str = ""
) -> InboxEntry:
    if kind is None:
        kind = (
            EntryKind.FILE
            if stat.S_ISREG(status.st_mode)
            else EntryKind.FOLDER
            if stat.S_ISDIR(status.st_mode)
            else EntryKind.SPECIAL
        )
    return InboxEntry(
        name, status.st_size, status.st_mtime_ns, status.st_ctime_ns, kind, link_target
    )


def is_inside(folder: str, path: str) -> bool:
    """Whether resolved `path` lies inside resolved `folder` (not the folder itself)."""
    return path != folder and os.path.commonpath([folder, path]) == folder


def plan_intake(
    entries: Iterable[InboxEntry],
    cursor: IntakeCursor,
    now_ns: int,
    settle_seconds: float,
    max_files: int,
    lag_seconds: float = 0.0,
) -> IntakePlan:
    """Split what arrived since `cursor` into ready, growing, over-cap and refused entries.

    A file is ready once it has not changed for `settle_seconds`, so a file still being copied in
    is never read half-written. The new cursor never passes a file that is still waiting, nor
    comes closer than `lag_seconds` (or the settle time) to `now_ns`.
    """
    settle_ns = int(settle_seconds * 1e9)
    arrived = sorted(
        (
            entry
            for entry in entries
            if entry.name in cursor.retry
            or (
                entry.ctime_ns >= cursor.watermark_ns
                and (entry.name, entry.ctime_ns) not in cursor.taken
            )
        ),
        key=lambda entry: (entry.ctime_ns, entry.name),
    )
    refused_at = datetime.fromtimestamp(now_ns / 1e9, UTC)
    refused: list[tuple[InboxEntry, Refusal]] = []
    pdfs: list[InboxEntry] = []
    for entry in arrived:
        refusal = _refusal(entry)
        if refusal is not None:
            reason, message = refusal
            record = Refusal(
                file_name=display_name(entry.name),
                reason=reason,
                message=message,
                refused_at=refused_at,
            )
            refused.append((entry, record))
        elif entry.kind is EntryKind.FILE:
            pdfs.append(entry)
    stable = [entry for entry in pdfs if now_ns - entry.changed_ns >= settle_ns]
    growing = tuple(entry for entry in pdfs if now_ns - entry.changed_ns < settle_ns)
    ready, deferred = tuple(stable[:max_files]), tuple(stable[max_files:])

    # The watermark stays `settle_seconds` behind `now_ns` (taken before the folder was listed),
    # so a file whose rename raced with the listing still lies above it on the next tick.
    waiting = growing + deferred
    trail_ns = max(settle_ns, int(lag_seconds * 1e9))
    watermark = min([entry.ctime_ns for entry in waiting] + [now_ns - trail_ns])
    watermark = max(watermark, cursor.watermark_ns)
    done = ready + tuple(entry for entry, _ in refused)
    taken = {(name, ctime) for name, ctime in cursor.taken if ctime >= watermark}
    taken |= {(entry.name, entry.ctime_ns) for entry in done if entry.ctime_ns >= watermark}
    return IntakePlan(
        ready,
        growing,
        deferred,
        tuple(refusal for _, refusal in refused),
        IntakeCursor(watermark, frozenset(taken)),
    )


def _refusal(entry: InboxEntry) -> tuple[RefusalReason, str] | None:
    is_pdf_name = entry.name.lower().endswith(PDF_SUFFIX)
    if entry.kind is EntryKind.FOLDER:
        return (RefusalReason.FOLDER, FOLDER_MESSAGE) if is_pdf_name else None
    if not is_pdf_name:
        return RefusalReason.NOT_A_PDF_NAME, "the name does not end in .pdf"
    if entry.kind is EntryKind.SYMLINK_OUTSIDE:
        return RefusalReason.SYMLINK_OUTSIDE_INBOX, outside_message(entry.link_target)
    if entry.kind is EntryKind.BROKEN_SYMLINK:
        target = display_name(entry.link_target)
        return RefusalReason.BROKEN_SYMLINK, f"a symbolic link to {target}, which cannot be opened"
    if entry.kind is EntryKind.SPECIAL:
        return RefusalReason.NOT_A_REGULAR_FILE, SPECIAL_MESSAGE
    return None


class InboxFileChanged(Exception):
    """The file is not the one listed, or changed while it was read: it is taken later."""


class InboxFileRefused(Exception):
    """The file must not be read (see `RefusalReason`)."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read_inbox_file(inbox: Path, entry: InboxEntry, max_bytes: int) -> bytes:
    """The bytes of a listed file, read through one descriptor.

    Raises `InboxFileRefused` for what must not be read (a link that now leads out of the folder,
    not a regular file, more than `max_bytes`: refused unread), `InboxFileChanged` when the file
    is not the one listed or changed while it was read, and the system's `OSError` otherwise
    (`FileNotFoundError` when it was removed, `PermissionError` when it may not be read).
    """
    target = os.path.realpath(inbox / entry.name)
    if not is_inside(os.path.realpath(inbox), target):
        raise InboxFileRefused(RefusalReason.SYMLINK_OUTSIDE_INBOX, outside_message(target))
    try:
        # O_NOFOLLOW: a link swapped in after realpath is not followed; O_NONBLOCK: a pipe swapped
        # in does not block the tick.
        descriptor = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InboxFileChanged("it was replaced by a symbolic link") from error
        raise
    try:
        before = os.fstat(descriptor)
        if stat.S_ISDIR(before.st_mode):
            raise InboxFileRefused(RefusalReason.FOLDER, FOLDER_MESSAGE)
        if not stat.S_ISREG(before.st_mode):
            raise InboxFileRefused(RefusalReason.NOT_A_REGULAR_FILE, SPECIAL_MESSAGE)
        if (before.st_size, before.st_mtime_ns) != (entry.size_bytes, entry.mtime_ns):
            raise InboxFileChanged(
                f"it changed after it was listed ({entry.size_bytes:,} -> {before.st_size:,} bytes)"
            )
        if before.st_size > max_bytes:
            raise InboxFileRefused(
                RefusalReason.TOO_LARGE,
                f"the file is {before.st_size:,} bytes; the limit is {max_bytes:,} "
                "(EXTRACTION_MAX_BYTES): it was not read",
            )
        data = _read_at_most(descriptor, max_bytes + 1)
        after = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    if len(data) != before.st_size or (after.st_size, after.st_mtime_ns) != (
        before.st_size,
        before.st_mtime_ns,
    ):
        raise InboxFileChanged(
            f"it changed while it was read ({before.st_size:,} -> {after.st_size:,} bytes)"
        )
    return data


def _read_at_most(descriptor: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(descriptor, min(_READ_CHUNK, remaining))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
