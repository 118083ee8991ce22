"""Which partitions an archive pass removes, and where the next pass starts."""

from datetime import UTC, datetime, timedelta

import pytest

from extraction_pipeline.core.operations.archive import (
    ArchiveCursor,
    ArchivePlan,
    plan_archive,
    window,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)
AFTER = timedelta(days=30)
OLD, YOUNG = NOW - timedelta(days=40), NOW - timedelta(days=1)


def plan(
    keys: list[str],
    settled: set[str],
    busy: set[str] = frozenset(),  # type: ignore[assignment]
    registered: dict[str, datetime | None] | None = None,
    start: int = 0,
    live: int | None = None,
) -> ArchivePlan:
    registered = dict.fromkeys(keys, OLD) if registered is None else registered
    return plan_archive(
        start, keys, settled, busy, registered, NOW, AFTER, live or start + len(keys)
    )


def test_settled_old_documents_go_and_the_others_stay_counted_by_reason() -> None:
    keys = ["extracted", "dead", "rerun", "failed", "new"]
    result = plan(keys, settled={"extracted", "dead", "rerun"}, busy={"rerun"})
    assert result.archive == ("extracted", "dead")
    assert result.kept == {"busy": 1, "unsettled": 2}
    assert result.wrapped and result.cursor == ArchiveCursor()


def test_the_first_young_document_ends_the_pass_and_the_next_starts_at_the_head() -> None:
    keys = ["a", "b", "young", "after"]
    registered = {"a": OLD, "b": OLD, "young": YOUNG, "after": OLD}
    result = plan(keys, settled=set(keys), registered=registered, start=3, live=100)
    assert result.archive == ("a", "b")
    assert result.examined == 2 and result.wrapped
    assert result.cursor == ArchiveCursor(0)


def test_a_full_window_moves_the_cursor_past_the_documents_it_kept() -> None:
    result = plan(["a", "b", "c", "d"], settled={"a", "d"}, start=5, live=100)
    assert result.archive == ("a", "d") and not result.wrapped
    # Five kept before the window, two kept in it: "a" and "d" will be gone.
    assert result.cursor == ArchiveCursor(7)


def test_a_key_the_registry_does_not_know_is_kept() -> None:
    result = plan(["by-hand"], settled={"by-hand"}, registered={"by-hand": None})
    assert result.archive == () and result.kept == {"unregistered": 1}


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
