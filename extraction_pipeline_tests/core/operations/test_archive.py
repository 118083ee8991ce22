"""Which partitions an archive pass removes, and where the next pass starts."""

from datetime import UTC, datetime, timedelta

import pytest

from extraction_pipeline.core.operations.archive import (
    ArchiveCursor,
    ArchivePlan,
    plan_archive,
    window,
)
from extraction_pipeline.core.operations.lifecycle import DocumentState as S

NOW = datetime(2026, 12, 1, tzinfo=UTC)
AFTER = timedelta(days=30)
OLD, YOUNG = NOW - timedelta(days=40), NOW - timedelta(days=1)


def plan(
    states: dict[str, S | None],
    registered: dict[str, datetime | None],
    start: int = 0,
    live: int | None = None,
) -> ArchivePlan:
    keys = list(states)
    known = {k: v for k, v in states.items() if v is not None}
    return plan_archive(start, keys, known, registered, NOW, AFTER, live or start + len(keys))


def test_settled_old_documents_go_and_the_others_stay_counted_by_state() -> None:
    states = {
        "extracted": S.EXTRACTED,
        "review": S.NEEDS_REVIEW,
        "dead": S.DEAD_LETTER,
        "failed": S.FAILED,
        "running": S.RUNNING,
        "queued": S.QUEUED,
        "batch": S.IN_BATCH,
        "new": S.NEW,
    }
    result = plan(states, dict.fromkeys(states, OLD))
    assert result.archive == ("extracted", "review", "dead")
    assert result.kept == {"failed": 1, "running": 1, "queued": 1, "in_batch": 1, "new": 1}
    assert result.wrapped and result.cursor == ArchiveCursor()


def test_the_first_young_document_ends_the_pass_and_the_next_starts_at_the_head() -> None:
    states = {"a": S.EXTRACTED, "b": S.FAILED, "young": S.EXTRACTED, "after": S.EXTRACTED}
    registered = {"a": OLD, "b": OLD, "young": YOUNG, "after": OLD}
    result = plan(states, registered, start=3, live=100)
    assert result.archive == ("a",)
    assert result.examined == 2 and result.wrapped
    assert result.cursor == ArchiveCursor(0)


def test_a_full_window_moves_the_cursor_past_the_documents_it_kept() -> None:
    states = {"a": S.EXTRACTED, "b": S.FAILED, "c": S.NEW, "d": S.DEAD_LETTER}
    result = plan(states, dict.fromkeys(states, OLD), start=5, live=100)
    assert result.archive == ("a", "d") and not result.wrapped
    # Five kept before the window, two kept in it: "a" and "d" will be gone.
    assert result.cursor == ArchiveCursor(7)


def test_a_key_the_registry_does_not_know_is_kept() -> None:
    result = plan({"by-hand": S.EXTRACTED}, {"by-hand": None})
    assert result.archive == () and result.kept == {"unknown": 1}


@pytest.mark.parametrize(
    ("position", "live", "expected"),
    [(0, 0, (0, 0)), (0, 2500, (0, 500)), (2200, 2500, (2200, 2500)), (3000, 2500, (0, 500))],
)
def test_window_restarts_at_the_head_when_the_cursor_is_past_the_end(
    position: int, live: int, expected: tuple[int, int]
) -> None:
    assert window(ArchiveCursor(position), live) == expected


@pytest.mark.parametrize(
    ("text", "position"), [(None, 0), ("", 0), ("12", 12), ("x", 0), ("-4", 0)]
)
def test_cursor_parses_what_it_wrote_and_nothing_else(text: str | None, position: int) -> None:
    assert ArchiveCursor.parse(text).position == position
    assert ArchiveCursor.parse(ArchiveCursor(position).serialize()).position == position
