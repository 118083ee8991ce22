"""Dagster storage tuned for a pipeline that writes several events per document.

`PooledPostgresEventLogStorage` is dagster-postgres' event-log storage with one change: its
engine keeps a few connections open. The stock storage uses `NullPool`, so every event write
opens a new PostgreSQL connection (a new server backend, ~10 ms); a ranged run writes several
events per document. dagster.yaml names this class; set `class: PostgresEventLogStorage`
(module `dagster_postgres`) there to get the stock behaviour back.
"""

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy.exc
from dagster import EventLogEntry
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import (
    DagsterPostgresException,
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

from extraction_pipeline.instance.dagster_compat import ConfigurableClassData

POOL_SIZE = 2
# Connections are replaced after this long, so a pipeline left running for days holds no
# connection a server or proxy has silently dropped.
POOL_RECYCLE_SECONDS = 300
# How long an event write waits for the database to come back (a restart, a failover).
RECONNECT_SECONDS = 120.0

log = logging.getLogger(__name__)


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=POOL_SIZE,
            max_overflow=4,
            pool_recycle=POOL_RECYCLE_SECONDS,
            # A pooled connection outlives a database restart: test it on checkout, so the first
            # event after a restart does not fail its step (the stock storage connects anew).
            pool_pre_ping=True,
        )

    def store_event(self, event: EventLogEntry) -> None:
        _while_database_returns(functools.partial(super().store_event, event))

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        _while_database_returns(functools.partial(super().store_event_batch, events))

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> "PooledPostgresEventLogStorage":
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


def _while_database_returns(write: Callable[[], None]) -> None:
    """Write; if the server cannot be reached (restarting, failing over), try again for up to
    RECONNECT_SECONDS instead of failing the step that wrote the event. dagster-postgres' own
    connection retries give up after a few seconds."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    delay = 0.5
    while True:
        try:
            write()
            return
        except (sqlalchemy.exc.OperationalError, DagsterPostgresException) as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "event log write failed (%s); retrying in %.1f s", type(error).__name__, delay
            )
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
