import os
import threading
import time
from pathlib import Path

import pytest

from extraction_pipeline.core.documents.refusals import RefusalReason
from extraction_pipeline.core.intake.inbox import (
    EntryKind,
    InboxEntry,
    InboxFileChanged,
    InboxFileRefused,
    IntakeCursor,
    plan_intake,
    plan_tick,
    read_inbox_file,
    scan_inbox,
)
from extraction_pipeline_tests.pdfs import good_pdf

SECOND = 1_000_000_000
NOW = 1_000 * SECOND


def entry(name: str, age_s: float, size: int = 100) -> InboxEntry:
    t = NOW - int(age_s * SECOND)
    return InboxEntry(name, size, t, t)


def names(entries: tuple[InboxEntry, ...]) -> list[str]:
    return [e.name for e in entries]


EMPTY = IntakeCursor()


def plan(entries: list[InboxEntry], cursor: IntakeCursor = EMPTY, now: int = NOW, cap: int = 10):
    return plan_intake(entries, cursor, now_ns=now, settle_seconds=2, max_files=cap)


def test_new_stable_pdfs_are_ready_oldest_first() -> None:
    result = plan([entry("b.pdf", 10), entry("a.pdf", 20), entry("c.PDF", 5)])
    assert names(result.ready) == ["a.pdf", "b.pdf", "c.PDF"]


def test_file_still_growing_waits_and_holds_the_watermark() -> None:
    result = plan([entry("done.pdf", 10), entry("copying.pdf", 0.5)])
    assert names(result.ready) == ["done.pdf"]
    assert names(result.growing) == ["copying.pdf"]
    assert result.cursor.watermark_ns <= NOW - int(0.5 * SECOND)
    files = [entry("done.pdf", 10), entry("copying.pdf", 0.5)]  # the copy has finished
    later = plan(files, result.cursor, NOW + 3 * SECOND)
    assert names(later.ready) == ["copying.pdf"]


def test_non_pdf_files_are_refused_once() -> None:
    first = plan([entry("notes.txt", 10), entry("scan.pdf", 10)])
    (refusal,) = first.refused
    assert (refusal.file_name, refusal.reason, refusal.message) == (
        "notes.txt",
        RefusalReason.NOT_A_PDF_NAME,
        "the name does not end in .pdf",
    )
    assert refusal.refused_at.timestamp() == NOW / SECOND
    second = plan([entry("notes.txt", 11), entry("scan.pdf", 11)], first.cursor, NOW + SECOND)
    assert second.refused == () and second.ready == ()


def special(name: str, kind: EntryKind, target: str = "") -> InboxEntry:
    t = NOW - 10 * SECOND
    return InboxEntry(name, 10, t, t, kind, target)


@pytest.mark.parametrize(
    ("listed", "reason", "message"),
    [
        (
            special("x.pdf", EntryKind.FOLDER),
            RefusalReason.FOLDER,
            "a folder, not a file: folders in the drop folder are not looked into",
        ),
        (
            special("passwd.pdf", EntryKind.SYMLINK_OUTSIDE, "/etc/passwd"),
            RefusalReason.SYMLINK_OUTSIDE_INBOX,
            "a symbolic link to /etc/passwd, outside the drop folder: not followed",
        ),
        (
            special("gone.pdf", EntryKind.BROKEN_SYMLINK, "/in/missing.pdf"),
            RefusalReason.BROKEN_SYMLINK,
            "a symbolic link to /in/missing.pdf, which cannot be opened",
        ),
        (
            special("pipe.PDF", EntryKind.SPECIAL),
            RefusalReason.NOT_A_REGULAR_FILE,
            "not a regular file (a pipe, socket or device): it is never opened",
        ),
        (
            special("passwd", EntryKind.SYMLINK_OUTSIDE, "/etc/passwd"),
            RefusalReason.NOT_A_PDF_NAME,
            "the name does not end in .pdf",
        ),
        (
            special(os.fsdecode(b"caf\xe9.txt"), EntryKind.FILE),
            RefusalReason.NOT_A_PDF_NAME,
            "the name does not end in .pdf",
        ),
    ],
    ids=["folder", "symlink-outside", "broken-symlink", "pipe", "link-not-pdf", "not-utf8-name"],
)
def test_entries_that_cannot_be_documents_are_refused_with_the_reason(
    listed: InboxEntry, reason: RefusalReason, message: str
) -> None:
    result = plan([listed, entry("good.pdf", 10)])
    (refusal,) = result.refused
    assert (refusal.reason, refusal.message) == (reason, message)
    assert refusal.file_name == listed.name.encode("utf-8", "surrogateescape").decode(
        "utf-8", "replace"
    )
    assert names(result.ready) == ["good.pdf"]
    assert plan([listed], result.cursor, NOW + SECOND).refused == ()  # refused once


def test_folders_not_named_like_a_pdf_are_passed_over() -> None:
    result = plan([special("archive", EntryKind.FOLDER)])
    assert (result.ready, result.refused, result.growing) == ((), (), ())


def test_a_name_to_retry_is_looked_at_again_whatever_its_ctime() -> None:
    first = plan([entry("a.pdf", 10)])
    assert names(first.ready) == ["a.pdf"]
    retrying = IntakeCursor(first.cursor.watermark_ns, first.cursor.taken, frozenset({"a.pdf"}))
    again = plan([entry("a.pdf", 10)], retrying, NOW + SECOND)
    assert names(again.ready) == ["a.pdf"]
    assert again.cursor.retry == frozenset()


def test_cap_defers_the_rest_to_the_next_tick() -> None:
    files = [entry(f"{i:02d}.pdf", 100 - i) for i in range(5)]
    first = plan(files, cap=2)
    assert names(first.ready) == ["00.pdf", "01.pdf"]
    assert names(first.deferred) == ["02.pdf", "03.pdf", "04.pdf"]
    second = plan(files, first.cursor, cap=2)
    assert names(second.ready) == ["02.pdf", "03.pdf"]
    third = plan(files, second.cursor, cap=2)
    assert names(third.ready) == ["04.pdf"]
    assert plan(files, third.cursor, cap=2).ready == ()


def test_cursor_skips_what_was_taken_and_sees_late_arrivals() -> None:
    first = plan([entry("a.pdf", 10)])
    # b.pdf was moved in (mv keeps mtime, bumps ctime): old mtime, new ctime.
    moved = InboxEntry("b.pdf", 100, NOW - 3600 * SECOND, NOW + 1 * SECOND)
    second = plan([entry("a.pdf", 13), moved], first.cursor, NOW + 4 * SECOND)
    assert names(second.ready) == ["b.pdf"]


def test_rewritten_file_is_seen_again() -> None:
    first = plan([entry("a.pdf", 10)])
    rewritten = InboxEntry("a.pdf", 200, NOW + SECOND, NOW + SECOND)
    second = plan([rewritten], first.cursor, NOW + 5 * SECOND)
    assert names(second.ready) == ["a.pdf"]


def test_cursor_stays_small_and_round_trips() -> None:
    files = [entry(f"{i:04d}.pdf", 10) for i in range(1000)]
    result = plan(files, cap=1000)
    assert len(result.ready) == 1000
    assert len(result.cursor.taken) == 0
    assert IntakeCursor.parse(result.cursor.serialize()) == result.cursor
    assert IntakeCursor.parse(None) == IntakeCursor()
    retrying = IntakeCursor(5, frozenset({("a.pdf", 7)}), frozenset({"b.pdf"}))
    assert IntakeCursor.parse(retrying.serialize()) == retrying
    assert IntakeCursor.parse('{"w": 5, "t": []}') == IntakeCursor(5)  # a cursor of before


def test_scan_lists_what_is_there_without_following_links_out(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    (outside / "secret.pdf").write_bytes(b"secret" * 100)
    (inbox / "a.pdf").write_bytes(b"x")
    (inbox / ".hidden.pdf").write_bytes(b"x")
    (inbox / "b.pdf.part").write_bytes(b"x")
    (inbox / "folder.pdf").mkdir()
    os.symlink(inbox / "a.pdf", inbox / "link.pdf")
    os.symlink(outside / "secret.pdf", inbox / "passwd.pdf")
    os.symlink(inbox / "missing.pdf", inbox / "dangling.pdf")
    os.mkfifo(inbox / "pipe.pdf")
    listed = {e.name: (e.kind, e.size_bytes, e.link_target) for e in scan_inbox(inbox)}
    real = os.path.realpath(tmp_path)
    secret_link_size = len(str(outside / "secret.pdf"))  # the link's own size, not the target's
    assert listed == {
        "a.pdf": (EntryKind.FILE, 1, ""),
        "folder.pdf": (EntryKind.FOLDER, listed["folder.pdf"][1], ""),
        "link.pdf": (EntryKind.FILE, 1, f"{real}/inbox/a.pdf"),
        "passwd.pdf": (EntryKind.SYMLINK_OUTSIDE, secret_link_size, f"{real}/outside/secret.pdf"),
        "dangling.pdf": (
            EntryKind.BROKEN_SYMLINK,
            len(str(inbox / "missing.pdf")),
            f"{real}/inbox/missing.pdf",
        ),
        "pipe.pdf": (EntryKind.SPECIAL, 0, ""),
    }
    assert scan_inbox(tmp_path / "missing") == []


def test_a_new_link_to_an_old_file_arrives_when_the_link_is_made(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    old = tmp_path / "kept" / "old.pdf"
    old.write_bytes(b"x")
    first = plan_intake(scan_inbox(tmp_path), IntakeCursor(), time.time_ns(), 0, 10)
    assert names(first.ready) == []  # in a sub-folder: not taken
    time.sleep(0.05)  # past the file system's clock tick
    os.symlink(old, tmp_path / "link.pdf")
    second = plan_intake(scan_inbox(tmp_path), first.cursor, time.time_ns(), 0, 10)
    assert names(second.ready) == ["link.pdf"]
    assert second.ready[0].ctime_ns > old.stat().st_ctime_ns


def listed(inbox: Path, name: str) -> InboxEntry:
    (found,) = [e for e in scan_inbox(inbox) if e.name == name]
    return found


def test_read_returns_the_listed_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(good_pdf())
    assert read_inbox_file(tmp_path, listed(tmp_path, "a.pdf"), 10**6) == good_pdf()


def swap_for_outside_link(inbox: Path, name: str) -> None:
    (inbox.parent / "secret").write_bytes(b"root:x:0:0")
    (inbox / name).unlink()
    os.symlink(inbox.parent / "secret", inbox / name)


def swap_for_folder(inbox: Path, name: str) -> None:
    (inbox / name).unlink()
    (inbox / name).mkdir()


def swap_for_pipe(inbox: Path, name: str) -> None:
    (inbox / name).unlink()
    os.mkfifo(inbox / name)  # opening it for reading must not wait for a writer


@pytest.mark.parametrize(
    ("swap", "reason", "message"),
    [
        (
            swap_for_outside_link,
            RefusalReason.SYMLINK_OUTSIDE_INBOX,
            "a symbolic link to {outside}/secret, outside the drop folder: not followed",
        ),
        (
            swap_for_folder,
            RefusalReason.FOLDER,
            "a folder, not a file: folders in the drop folder are not looked into",
        ),
        (
            swap_for_pipe,
            RefusalReason.NOT_A_REGULAR_FILE,
            "not a regular file (a pipe, socket or device): it is never opened",
        ),
    ],
    ids=["symlink-outside", "folder", "pipe"],
)
def test_read_refuses_what_was_swapped_in_after_the_listing(
    tmp_path: Path, swap, reason: RefusalReason, message: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(good_pdf())
    entry = listed(inbox, "a.pdf")
    swap(inbox, "a.pdf")
    with pytest.raises(InboxFileRefused) as refused:
        read_inbox_file(inbox, entry, 10**6)
    assert refused.value.reason is reason
    assert str(refused.value) == message.format(outside=os.path.realpath(tmp_path))


def test_read_refuses_a_file_over_the_byte_limit_without_reading_it(tmp_path: Path) -> None:
    (tmp_path / "big.pdf").write_bytes(b"%PDF-" + b"0" * 1995)
    with pytest.raises(InboxFileRefused) as refused:
        read_inbox_file(tmp_path, listed(tmp_path, "big.pdf"), 1999)
    assert refused.value.reason is RefusalReason.TOO_LARGE
    assert str(refused.value) == (
        "the file is 2,000 bytes; the limit is 1,999 (EXTRACTION_MAX_BYTES): it was not read"
    )
    assert read_inbox_file(tmp_path, listed(tmp_path, "big.pdf"), 2000)[:5] == b"%PDF-"


def test_read_of_a_file_that_grew_since_the_listing_is_put_off(tmp_path: Path) -> None:
    path = tmp_path / "growing.pdf"
    path.write_bytes(b"%PDF-1.7\n")
    entry = listed(tmp_path, "growing.pdf")
    with path.open("ab") as stream:
        stream.write(b"more")
    with pytest.raises(
        InboxFileChanged, match=r"^it changed after it was listed \(9 -> 13 bytes\)"
    ):
        read_inbox_file(tmp_path, entry, 10**6)


def test_read_of_a_file_appended_to_meanwhile_never_returns_a_torn_copy(tmp_path: Path) -> None:
    """A writer appends while the file is listed and read again and again: every read returns
    exactly the bytes listed, or is put off; never a copy torn by a write."""
    path = tmp_path / "growing.pdf"
    head = b"x" * 4_000_000
    path.write_bytes(head)

    def append() -> None:
        with path.open("ab", buffering=0) as stream:
            for _ in range(500):
                stream.write(b"y" * 4096)
                time.sleep(0.002)

    writer = threading.Thread(target=append)
    writer.start()
    outcomes = {"read": 0, "put off": 0}
    while writer.is_alive():
        entry = listed(tmp_path, "growing.pdf")
        try:
            data = read_inbox_file(tmp_path, entry, 10**9)
        except InboxFileChanged:
            outcomes["put off"] += 1
        else:
            assert len(data) == entry.size_bytes
            assert data == head + b"y" * (len(data) - len(head))
            outcomes["read"] += 1
    writer.join()
    assert outcomes["put off"] > 0, outcomes
    data = read_inbox_file(tmp_path, listed(tmp_path, "growing.pdf"), 10**9)
    assert data == head + b"y" * 4096 * 500


def test_read_of_a_removed_file_raises_file_not_found(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(b"x")
    entry = listed(tmp_path, "a.pdf")
    (tmp_path / "a.pdf").unlink()
    with pytest.raises(FileNotFoundError):
        read_inbox_file(tmp_path, entry, 10)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode says")
def test_read_of_a_file_without_read_permission_raises_permission_error(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(b"x")
    (tmp_path / "a.pdf").chmod(0)
    with pytest.raises(PermissionError):
        read_inbox_file(tmp_path, listed(tmp_path, "a.pdf"), 10)


class TickClock:
    """Wall time that moves only when the tick sleeps (so files made now have real ctimes);
    `on_sleep` runs after each sleep, as the world would change meanwhile."""

    def __init__(self, on_sleep=None) -> None:
        self.offset_ns = 0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def clock(self) -> int:
        return time.time_ns() + self.offset_ns

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset_ns += int(seconds * 1e9)
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


def tick(inbox: Path, fake: TickClock, watch: float = 0.0, settle: float = 1.0):
    return plan_tick(
        inbox, EMPTY, settle, 100, watch_seconds=watch, clock=fake.clock, sleep=fake.sleep
    )


def test_a_tick_waits_for_files_still_settling_instead_of_leaving_them(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(good_pdf())
    fake = TickClock()
    result = tick(tmp_path, fake)
    assert names(result.ready) == ["a.pdf"] and not result.growing
    assert len(fake.sleeps) == 1 and 1.0 < fake.sleeps[0] <= 1.1  # once, about `settle`


def test_a_file_still_changing_after_the_wait_is_left_for_the_next_tick(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF-1.7 partial")

    def append(_: int) -> None:
        with path.open("ab") as stream:
            stream.write(b" more")
        os.utime(path, ns=(fake.clock(), fake.clock()))  # changed now, on the tick's clock

    fake = TickClock(on_sleep=append)
    result = tick(tmp_path, fake)
    assert names(result.growing) == ["a.pdf"] and not result.ready
    assert len(fake.sleeps) == 1


def test_a_tick_with_nothing_new_watches_the_folder_and_takes_what_arrives(
    tmp_path: Path,
) -> None:
    def drop(sleeps: int) -> None:
        if sleeps == 3:
            (tmp_path / "late.pdf").write_bytes(good_pdf())
            os.utime(tmp_path / "late.pdf", ns=(fake.clock(), fake.clock()))

    fake = TickClock(on_sleep=drop)
    result = tick(tmp_path, fake, watch=3.0)
    assert names(result.ready) == ["late.pdf"]
    assert fake.sleeps[:3] == [0.2, 0.2, 0.2] and 1.0 < fake.sleeps[3] <= 1.1


def test_the_watch_ends_after_its_time_and_is_off_at_zero(tmp_path: Path) -> None:
    fake = TickClock()
    result = tick(tmp_path, fake, watch=3.0)
    assert not result.ready and not result.growing
    assert sum(fake.sleeps) == pytest.approx(3.0, abs=0.21)
    fake = TickClock()
    assert not tick(tmp_path, fake, watch=0.0).ready
    assert fake.sleeps == []


def test_a_long_settle_time_does_not_hold_the_tick(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(good_pdf())
    fake = TickClock()
    result = tick(tmp_path, fake, settle=30.0)
    assert names(result.growing) == ["a.pdf"] and fake.sleeps == []  # left for a later tick
