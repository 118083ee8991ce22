"""The model's limits for the whole deployment, kept in its Postgres (`SharedLimits`).

The provider's quota is per account, so every run of a deployment (on any host) shares one
concurrency cap and one RPM/TPM window:

- **Slots** are session advisory locks `(LOCK_SPACE, 0..capacity-1)`. A process takes a free one
  with `pg_try_advisory_lock` and gives it back after its call; if it dies, Postgres ends its
  session and the slot is free again, so a crash can never leak the cap.
- **The window** is the table `extraction_model_window`: one row per request started within the
  last minute (plus the arrival margin), with its tokens. Admission runs in one transaction under
  an advisory lock, against the database's clock, so hosts with skewed clocks still agree.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg
import psycopg2
import psycopg2.extensions

from extraction_pipeline.core.model.ratelimit import WINDOW_SECONDS, LimitsUnavailable
from extraction_pipeline.instance.postgres import libpq_dsn

log = logging.getLogger(__name__)

LOCK_SPACE = 0x45585452  # "EXTR": the first key of every advisory lock taken here
WINDOW_LOCK = -1  # the second key of the lock that serialises admissions
WINDOW_TABLE = "extraction_model_window"

T = TypeVar("T")


def deployment_limits(instance: dg.DagsterInstance) -> PostgresLimits | None:
    """The limits of the deployment whose Postgres holds `instance`'s event log; None for an
    instance without Postgres (an in-process test), whose runs keep their own limits."""
    url = getattr(instance.event_log_storage, "postgres_url", None)
    return PostgresLimits(url) if isinstance(url, str) else None


class PostgresLimits:
    """`SharedLimits` on one dedicated connection of this process; not thread-safe (one event
    loop uses it). `close()` gives back every slot still held."""

    def __init__(self, url: str) -> None:
        self._dsn = libpq_dsn(url)
        self._connection: psycopg2.extensions.connection | None = None
        self._table_ready = False
        # A session may take its own advisory lock again, so this process skips its own slots.
        self._held: set[int] = set()

    def try_slot(self, capacity: int) -> int | None:
        # Start at a random slot, so processes do not all contend for slot 0; LIMIT 1 stops
        # the scan at the first lock taken (no other slot is locked on the way).
        first = random.randrange(capacity)
        order = [(first + offset) % capacity for offset in range(capacity)]
        order = [slot for slot in order if slot not in self._held]
        if not order:
            return None
        row = self._query(
            "SELECT slot FROM unnest(%s::int[]) AS slot "
            "WHERE pg_try_advisory_lock(%s, slot) LIMIT 1",
            (order, LOCK_SPACE),
        )
        if row is None:
            return None
        self._held.add(int(row[0]))
        return int(row[0])

    def release_slot(self, slot: int) -> None:
        if slot not in self._held:
            return  # taken in a session that has ended since: its locks went with it
        self._held.discard(slot)
        try:
            self._query("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, slot))
        except (psycopg2.Error, LimitsUnavailable) as error:  # the session is gone, locks too
            log.warning("could not release model slot %s (%s)", slot, type(error).__name__)

    def admit(self, tokens: int, rpm: int | None, tpm: int | None) -> tuple[float, int | None]:
        return self._with_connection(lambda cursor: self._admit(cursor, tokens, rpm, tpm))

    def record_tokens(self, ticket: int, tokens: int) -> None:
        try:
            self._query(
                f"UPDATE {WINDOW_TABLE} SET tokens = %s WHERE id = %s RETURNING id",
                (tokens, ticket),
            )
        except (psycopg2.Error, LimitsUnavailable) as error:  # the estimate stays (safe side)
            log.warning("could not record the tokens of a request (%s)", type(error).__name__)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()  # ends the session: every slot still held is free
            self._connection = None
        self._held.clear()

    def __enter__(self) -> PostgresLimits:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _admit(
        self, cursor: Any, tokens: int, rpm: int | None, tpm: int | None
    ) -> tuple[float, int | None]:
        self._ensure_table(cursor)
        cursor.execute("BEGIN")
        try:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, WINDOW_LOCK))
            cursor.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            now = cursor.fetchone()[0]
            cursor.execute(
                f"DELETE FROM {WINDOW_TABLE} WHERE started_at <= %s", (now - WINDOW_SECONDS,)
            )
            cursor.execute(f"SELECT count(*), coalesce(sum(tokens), 0) FROM {WINDOW_TABLE}")
            started, spent = cursor.fetchone()
            wait = 0.0
            if rpm is not None and started >= rpm:
                # Room comes when the rpm-th newest request leaves the window.
                cursor.execute(
                    f"SELECT started_at FROM {WINDOW_TABLE} "
                    "ORDER BY started_at DESC OFFSET %s LIMIT 1",
                    (rpm - 1,),
                )
                wait = cursor.fetchone()[0] + WINDOW_SECONDS - now
            excess = spent + tokens - tpm if tpm is not None else 0
            if started and excess > 0:
                # Room comes when enough of the oldest tokens leave; a request larger than the
                # whole budget waits for an empty window (then goes alone).
                cursor.execute(
                    "SELECT coalesce(min(started_at) FILTER (WHERE running >= %s), "
                    "max(started_at)) FROM (SELECT started_at, sum(tokens) OVER "
                    f"(ORDER BY started_at, id) AS running FROM {WINDOW_TABLE}) AS spends",
                    (excess,),
                )
                wait = max(wait, cursor.fetchone()[0] + WINDOW_SECONDS - now)
            if wait > 0:
                cursor.execute("ROLLBACK")
                return wait, None
            cursor.execute(
                f"INSERT INTO {WINDOW_TABLE} (started_at, tokens) VALUES (%s, %s) RETURNING id",
                (now, tokens),
            )
            ticket = int(cursor.fetchone()[0])
            cursor.execute("COMMIT")
            return 0.0, ticket
        except BaseException:
            if not self._connection_broken():
                cursor.execute("ROLLBACK")
            raise

    def _ensure_table(self, cursor: Any) -> None:
        if self._table_ready:
            return
        cursor.execute("BEGIN")
        # Serialised: concurrent CREATE IF NOT EXISTS can still collide in the catalog.
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, WINDOW_LOCK))
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {WINDOW_TABLE} (id bigserial PRIMARY KEY, "
            "started_at double precision NOT NULL, tokens integer NOT NULL)"
        )
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {WINDOW_TABLE}_started ON {WINDOW_TABLE} (started_at)"
        )
        cursor.execute("COMMIT")
        self._table_ready = True

    def _query(self, statement: str, parameters: tuple[Any, ...]) -> tuple[Any, ...] | None:
        def run(cursor: Any) -> tuple[Any, ...] | None:
            cursor.execute(statement, parameters)
            return cursor.fetchone()  # type: ignore[no-any-return]

        return self._with_connection(run)

    def _with_connection(self, work: Callable[[Any], T]) -> T:
        """Run `work` on the connection, connecting again if there is none or it broke; raise
        `LimitsUnavailable` when the server cannot be reached (the limiter waits and asks
        again). A new session holds no slot: calls still in flight on the old one are uncounted
        until they end, which errs past the cap only for the moment of a database restart."""
        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = psycopg2.connect(self._dsn)
                    self._connection.autocommit = True
                with self._connection.cursor() as cursor:
                    return work(cursor)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                if not self._connection_broken() and self._connection is not None:
                    raise
                self._forget_session()
                if attempt == 2:
                    raise LimitsUnavailable(type(error).__name__) from error
        raise AssertionError("unreachable")

    def _forget_session(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._held.clear()  # the old session's locks went with it

    def _connection_broken(self) -> bool:
        return self._connection is None or self._connection.closed != 0
