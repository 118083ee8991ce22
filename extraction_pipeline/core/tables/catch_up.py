"""When the tables need a refresh of their own: the decision of the `tables_automation` sensor.

Every run that records document outcomes refreshes the tables at its end, so the tables fall
behind only when no run did: a run that died, outcomes written after a run ended (a killed run's
documents, settled by the run-status sensor), a runless event. The sensor compares two numbers,
the newest outcome's storage id in the event log and the one the tables were last refreshed up
to, and asks for a refresh only when no run is under way (its end refreshes anyway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# A refresh asked for the same newest outcome is asked again only after this long: a refresh
# that failed is retried, not every tick.
RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class CatchUpCursor:
    """The newest outcome a refresh was last asked for, and when."""

    requested: int = 0
    at: float = 0.0

    def serialize(self) -> str:
        return json.dumps({"requested": self.requested, "at": self.at})

    @classmethod
    def parse(cls, raw: str | None) -> CatchUpCursor:
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(int(data["requested"]), float(data["at"]))
        except (ValueError, KeyError, TypeError):
            return cls()  # a cursor of the automation sensor this one replaced


@dataclass(frozen=True)
class CatchUp:
    refresh: bool
    reason: str
    cursor: CatchUpCursor


def decide_catch_up(
    newest_outcome: int | None,
    tables_position: int | None,
    runs_under_way: int,
    cursor: CatchUpCursor,
    now: float,
) -> CatchUp:
    """Whether to refresh the tables now. `newest_outcome`: the storage id of the newest outcome
    event (None: none yet); `tables_position`: the feed position of the last refresh reported
    (None: never refreshed)."""
    if newest_outcome is None:
        return CatchUp(False, "no document outcome yet", cursor)
    if tables_position is not None and tables_position >= newest_outcome:
        return CatchUp(False, f"the tables are up to date (outcome {newest_outcome})", cursor)
    if runs_under_way:
        return CatchUp(
            False,
            f"{runs_under_way} run(s) under way: each refreshes the tables at its end",
            cursor,
        )
    if cursor.requested == newest_outcome and now - cursor.at < RETRY_SECONDS:
        return CatchUp(False, f"a refresh up to outcome {newest_outcome} was asked already", cursor)
    behind = "were never refreshed" if tables_position is None else f"are at {tables_position}"
    return CatchUp(
        True,
        f"the tables {behind}, the newest outcome is {newest_outcome}",
        CatchUpCursor(newest_outcome, now),
    )
