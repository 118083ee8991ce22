"""The deployment's `ObjectStore`: the local data dir, or S3-compatible object storage.

EXTRACTION_DATA_DIR=s3://bucket/prefix puts originals, registrations, records, dead letters and
tables in object storage, so run workers on any host share them. Its locks (the tables refresh,
the registry's aliases) are Postgres advisory locks in the deployment's own database
(EXTRACTION_PG_URL, which every process of a deployment has): exclusive across hosts, and
released by Postgres when a holder's process dies.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg2

from extraction_pipeline.core.s3_store import S3ObjectStore
from extraction_pipeline.core.store import LocalObjectStore, ObjectStore, is_object_storage_url
from extraction_pipeline.instance.postgres import libpq_dsn

# The first key of the store's advisory locks ("STOR"); the model's slots use another space.
STORE_LOCK_SPACE = 0x53544F52
PG_URL_VARIABLE = "EXTRACTION_PG_URL"


class StoreConfigurationError(Exception):
    """The data dir names object storage but the deployment gives no database for its locks."""


def open_store(location: str | Path, environ: Mapping[str, str] | None = None) -> ObjectStore:
    """The store at `location`: a local folder, or an s3:// URL."""
    text = str(location)
    if not is_object_storage_url(text):
        return LocalObjectStore(Path(location))
    environ = os.environ if environ is None else environ
    url = environ.get(PG_URL_VARIABLE)
    if not url:
        raise StoreConfigurationError(
            f"EXTRACTION_DATA_DIR={text} needs {PG_URL_VARIABLE}: the store's locks live in "
            "the deployment's Postgres (`extraction-pipeline dev` sets it for its processes)"
        )
    return S3ObjectStore(text, PostgresLocks(url).lock)


class PostgresLocks:
    """Named exclusive locks: a session advisory lock on a connection of its own, held while
    the block runs (a refresh may take seconds; no transaction stays open)."""

    def __init__(self, url: str) -> None:
        self._dsn = libpq_dsn(url)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        key = zlib.crc32(name.encode()) - 2**31  # a stable int4 per name
        connection = psycopg2.connect(self._dsn, application_name="extraction_pipeline lock")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s, %s)", (STORE_LOCK_SPACE, key))
            yield
        finally:
            connection.close()  # ends the session: the lock goes with it
