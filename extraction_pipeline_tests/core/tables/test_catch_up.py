"""The tables sensor's decision: refresh only when outcomes are newer than the tables and no run
is under way, and ask again for the same outcome only after RETRY_SECONDS."""

from extraction_pipeline.core.tables.catch_up import (
    RETRY_SECONDS,
    CatchUpCursor,
    decide_catch_up,
)


def test_nothing_to_do_without_outcomes_or_when_the_tables_are_up_to_date() -> None:
    assert not decide_catch_up(None, None, 0, CatchUpCursor(), 0.0).refresh
    assert not decide_catch_up(40, 40, 0, CatchUpCursor(), 0.0).refresh
    assert not decide_catch_up(40, 55, 0, CatchUpCursor(), 0.0).refresh  # a submission moved it


def test_behind_tables_wait_for_runs_under_way_then_are_refreshed_once() -> None:
    waiting = decide_catch_up(70, 40, 2, CatchUpCursor(), 100.0)
    assert not waiting.refresh and "2 run(s) under way" in waiting.reason
    first = decide_catch_up(70, None, 0, CatchUpCursor(), 100.0)
    assert first.refresh and "never refreshed" in first.reason
    assert first.cursor == CatchUpCursor(70, 100.0)
    assert CatchUpCursor.parse(first.cursor.serialize()) == first.cursor
    again = decide_catch_up(70, None, 0, first.cursor, 100.0 + RETRY_SECONDS - 1)
    assert not again.refresh  # the refresh asked for is queued or failed: not every tick
    assert decide_catch_up(70, None, 0, first.cursor, 100.0 + RETRY_SECONDS).refresh
    assert decide_catch_up(71, 40, 0, first.cursor, 101.0).refresh  # a newer outcome


def test_a_cursor_it_cannot_read_starts_afresh() -> None:
    assert CatchUpCursor.parse("{'automation': 'condition cursor'}") == CatchUpCursor()
    assert CatchUpCursor.parse(None) == CatchUpCursor()
