import os
from pathlib import Path

from extraction_pipeline.core.inbox import (
    InboxEntry,
    IntakeCursor,
    plan_intake,
    scan_inbox,
)

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


def test_non_pdf_files_are_ignored_once() -> None:
    first = plan([entry("notes.txt", 10), entry("scan.pdf", 10)])
    assert names(first.ignored) == ["notes.txt"]
    second = plan([entry("notes.txt", 11), entry("scan.pdf", 11)], first.cursor, NOW + SECOND)
    assert second.ignored == () and second.ready == ()


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


def test_scan_lists_regular_files_but_not_hidden_or_partial(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(b"x")
    (tmp_path / ".hidden.pdf").write_bytes(b"x")
    (tmp_path / "b.pdf.part").write_bytes(b"x")
    (tmp_path / "folder.pdf").mkdir()
    os.symlink(tmp_path / "a.pdf", tmp_path / "link.pdf")
    listed = {e.name for e in scan_inbox(tmp_path)}
    assert listed == {"a.pdf", "link.pdf"}
    assert scan_inbox(tmp_path / "missing") == []
