"""dagster-postgres' run and schedule storage with a small connection pool.

The stock classes use `NullPool`: every query opens a new PostgreSQL connection (a new server
backend: fork, authentication, catalog caches). The daemon asks them several times a second even
when nothing happens (the run queue every second, sensor and schedule bookkeeping, run
monitoring), so an idle deployment's Postgres spent most of its CPU starting and ending backends.
Here each storage keeps one connection (more while threads need them, closed after use) that is
tested on checkout, so a database restart costs nothing but a reconnect; it looks for its tables
once per process (`check_tables_once`) and remembers what it found in the schema (`_schema_has`):
the stock classes ask the catalog on most calls whether a table, column or migrated index exists
(the idle daemon did so 10 times a second, half of its statements), and a schema only grows.
The event-log storage (`instance/event_log.py`) pools the same way. dagster.yaml names these
classes; the stock ones are `dagster_postgres.PostgresRunStorage` and `PostgresScheduleStorage`.
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any, Self

import sqlalchemy
from dagster_postgres import PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

from extraction_pipeline.instance.dagster_compat import ConfigurableClassData

# Connections are replaced after this long, so a pipeline left running for days holds no
# connection a server or proxy has silently dropped.
POOL_RECYCLE_SECONDS = 300

# (storage, database URL) whose tables this process has already checked or created.
_CHECKED: set[tuple[str, str]] = set()


def check_tables_once(storage: str, url: str, requested: bool) -> bool:
    """Whether a new storage object should look for (and create) its tables: once per process
    and database. A code server builds a new instance (three storages) for every sensor tick;
    looking at the catalog each time was half of what building one costs."""
    if not requested or (storage, url) in _CHECKED:
        return False
    _CHECKED.add((storage, url))
    return True


def pooled_engine(
    url: str, token_provider: Any, pool_size: int, *, autocommit: bool = True, ping: bool = True
) -> sqlalchemy.Engine:
    """An engine keeping `pool_size` connections open (and up to 4 more while in use)."""
    return create_pg_engine(
        url,
        token_provider,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
        pool_size=pool_size,
        max_overflow=4,
        pool_recycle=POOL_RECYCLE_SECONDS,
        # A pooled connection outlives a database restart: test it on checkout, so a query after
        # a restart does not fail (the stock storage connects anew every time).
        pool_pre_ping=ping,
    )


class PooledStorage:
    """Mixin for a dagster-postgres storage class: its engine becomes `pooled_engine`, its
    tables are looked for once per process (`TABLES` names them), and it is built from
    dagster.yaml's config as the stock class is."""

    TABLES = ""
    POOL_SIZE = 1
    postgres_url: str
    _token_provider: Any
    _engine: sqlalchemy.Engine

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        autocreate = check_tables_once(self.TABLES, postgres_url, should_autocreate_tables)
        super().__init__(postgres_url, autocreate, inst_data, token_provider)  # type: ignore[call-arg]
        self._engine.dispose()
        self._set_up_pools()

    def _set_up_pools(self) -> None:
        self._engine = pooled_engine(self.postgres_url, self._token_provider, self.POOL_SIZE)

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()

    def _schema_has(self, fact: str, ask: Callable[[], bool]) -> bool:
        """`ask()`, remembered once true: a table, column or built index stays (migrations only
        add them, and need a restart of the deployment). A false answer is asked again, so a
        migration run while the deployment is up is seen."""
        # Asked while the parent class sets up too, before this class's own attributes exist.
        known: set[str] = self.__dict__.setdefault("_schema_known", set())
        if fact in known:
            return True
        if exists := ask():
            known.add(fact)
        return exists

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> Self:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


class PooledPostgresRunStorage(PooledStorage, PostgresRunStorage):
    TABLES = "runs"

    # Each asked on every run query that could use it (the run queue's, every second).
    # `has_built_index` is already remembered by dagster-postgres.
    def has_run_stats_index_cols(self) -> bool:
        return self._schema_has("run stats columns", super().has_run_stats_index_cols)

    def has_bulk_actions_selector_cols(self) -> bool:
        return self._schema_has("bulk action selector", super().has_bulk_actions_selector_cols)

    def has_backfill_id_column(self) -> bool:
        return self._schema_has("backfill id", super().has_backfill_id_column)

    def has_bulk_action_job_name_column(self) -> bool:
        return self._schema_has("bulk action job name", super().has_bulk_action_job_name_column)

    def has_backfill_tags_table(self) -> bool:
        return self._schema_has("backfill tags", super().has_backfill_tags_table)


class PooledPostgresScheduleStorage(PooledStorage, PostgresScheduleStorage):
    TABLES = "schedules"

    # Each asked on every instigator state and tick read or write (several per sensor tick).
    def has_instigators_table(self) -> bool:
        return self._schema_has("instigators", super().has_instigators_table)

    def _has_instigators_table(self, conn: sqlalchemy.Connection) -> bool:
        return self._schema_has(
            "instigators", functools.partial(super()._has_instigators_table, conn)
        )

    def _has_asset_daemon_asset_evaluations_table(self, conn: sqlalchemy.Connection) -> bool:
        return self._schema_has(
            "asset evaluations",
            functools.partial(super()._has_asset_daemon_asset_evaluations_table, conn),
        )

    def has_secondary_index_table(self) -> bool:
        return self._schema_has("secondary indexes", super().has_secondary_index_table)

    def has_built_index(self, migration_name: str) -> bool:
        return self._schema_has(
            f"index {migration_name}", functools.partial(super().has_built_index, migration_name)
        )
