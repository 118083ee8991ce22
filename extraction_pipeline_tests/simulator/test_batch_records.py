"""A batch's schedule as pure arithmetic on its record: status and lines done at a given time."""

from __future__ import annotations

import pytest

from extraction_pipeline.simulator.records import BatchInputError, BatchRecord

# Created at 1000 with 10 s phases: in_progress at 1010, finalizing at 1020, completed at 1030.
CREATED, PHASE, LINES = 1000.0, 10.0, 4


def record(expires_in: float = 86400.0, cancelling_at: float | None = None) -> BatchRecord:
    return BatchRecord(
        id="batch_1",
        endpoint="/v1/responses",
        input_file_id="file_1",
        created_at=CREATED,
        phase_seconds=PHASE,
        expires_at=CREATED + expires_in,
        total=LINES,
        cancelling_at=cancelling_at,
    )


@pytest.mark.parametrize(
    ("now", "status", "done"),
    [
        (1000.0, "validating", 0),
        (1009.9, "validating", 0),
        (1010.0, "in_progress", 0),
        (1012.6, "in_progress", 1),  # line i of 4 is done at 1010 + (i+1) * 2.5
        (1017.6, "in_progress", 3),
        (1020.0, "finalizing", 4),
        (1030.0, "completed", 4),
    ],
)
def test_lines_are_done_one_by_one_across_in_progress(now: float, status: str, done: int) -> None:
    assert (record().status_at(now), record().lines_done_by(now)) == (status, done)


def test_expiry_mid_way_stops_the_lines_at_expires_at() -> None:
    expiring = record(expires_in=16.0)  # in_progress from 1010: 2 of 4 lines done by 1016
    assert expiring.status_at(1015.9) == "in_progress"
    assert expiring.status_at(1016.0) == "expired"
    assert expiring.lines_done_by(5000.0) == 2
    assert expiring.reached(expiring.in_progress_at, 5000.0)
    assert not expiring.reached(expiring.finalizing_at, 5000.0)


def test_expiry_after_completion_changes_nothing() -> None:
    assert record(expires_in=30.0).status_at(5000.0) == "completed"


def test_cancel_keeps_lines_done_before_it_and_ends_a_phase_later() -> None:
    cancelled = record(cancelling_at=1013.0)
    assert cancelled.status_at(1022.9) == "cancelling"
    assert cancelled.status_at(1023.0) == "cancelled"
    assert cancelled.lines_done_by(5000.0) == 1


def test_cancel_wins_over_a_later_expiry() -> None:
    assert record(expires_in=16.0, cancelling_at=1011.0).status_at(1016.0) == "cancelling"


def test_invalid_input_fails_at_once_with_nothing_done() -> None:
    failed = record().model_copy(update={"errors": [BatchInputError(code="x", message="bad")]})
    assert (failed.status_at(CREATED), failed.lines_done_by(5000.0)) == ("failed", 0)
