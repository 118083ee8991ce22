import dagster as dg
import psycopg2

from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.postgres import libpq_dsn
from extraction_pipeline_tests.conftest import storage_overrides
from extraction_pipeline_tests.defs.helpers import definitions_for
from extraction_pipeline_tests.pdfs import good_pdf


def test_runs_and_events_land_in_postgres_tables(
    instance: dg.DagsterInstance, pg_url: str, settings: Settings
) -> None:
    key = (
        DocumentRegistry(LocalObjectStore(settings.data_dir))
        .register("a.pdf", good_pdf())
        .record.document_key
    )
    instance.add_dynamic_partitions("documents", [key])
    job = definitions_for(settings).resolve_job_def("source_job")
    result = job.execute_in_process(instance=instance, partition_key=key)
    assert result.success

    with psycopg2.connect(libpq_dsn(pg_url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchone() == ("SUCCESS",)
        cursor.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (result.run_id, "ASSET_MATERIALIZATION"),
        )
        assert cursor.fetchone() == (1,)
        cursor.execute(
            "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s",
            ("documents",),
        )
        assert cursor.fetchall() == [(key,)]


def test_the_storages_are_the_pooled_ones_from_dagster_yaml(
    instance: dg.DagsterInstance, pg_url: str
) -> None:
    from extraction_pipeline.instance.event_log import PooledPostgresEventLogStorage
    from extraction_pipeline.instance.pooled_storage import (
        PooledPostgresRunStorage,
        PooledPostgresScheduleStorage,
    )

    assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
    assert isinstance(instance.run_storage, PooledPostgresRunStorage)
    assert isinstance(instance.schedule_storage, PooledPostgresScheduleStorage)

    def started_backends() -> set[int]:
        with psycopg2.connect(libpq_dsn(pg_url)) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return {row[0] for row in cursor.fetchall()}

    for _ in range(3):  # what the daemon asks every second or so, when nothing happens
        instance.get_runs(limit=10)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(dg.AssetKey("extraction"))
    before = started_backends()
    for _ in range(20):
        instance.get_runs(limit=10)
        instance.all_instigator_state()
        instance.get_latest_materialization_event(dg.AssetKey("extraction"))
    # The same connections answered: no backend started per query (the stock storages' NullPool).
    assert started_backends() == before
    assert 1 <= len(before) <= 4


def test_a_process_looks_for_its_tables_once_per_database(pg_url: str) -> None:
    from extraction_pipeline.instance.pooled_storage import check_tables_once

    assert check_tables_once("test", pg_url, requested=True)
    assert not check_tables_once("test", pg_url, requested=True)
    assert check_tables_once("test", pg_url + "_other", requested=True)
    assert not check_tables_once("test", pg_url + "_never", requested=False)
    # A second instance on the same database (a code server's next sensor tick) still works.
    with dg.instance_for_test(overrides=storage_overrides(pg_url)) as first:
        first.add_dynamic_partitions("documents", ["a"])
    with dg.instance_for_test(overrides=storage_overrides(pg_url)) as second:
        assert second.get_dynamic_partitions("documents") == ["a"]


def test_the_schema_is_looked_up_once_not_on_every_query(instance: dg.DagsterInstance) -> None:
    import sqlalchemy

    catalog_queries: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "pg_catalog" in statement or "information_schema" in statement:
            catalog_queries.append(statement)

    def daemon_like_queries() -> None:  # what the run queue and the sensor loop ask
        instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]), limit=5)
        instance.get_runs(limit=10)
        instance.get_backfills()
        instance.all_instigator_state()
        instance.get_instigator_state("origin", "selector")
        instance.schedule_storage.get_ticks("origin", "selector", limit=1)  # type: ignore[union-attr]
        instance.get_latest_materialization_event(dg.AssetKey("extraction"))

    engines = [
        instance.run_storage._engine,  # type: ignore[attr-defined]
        instance.schedule_storage._engine,  # type: ignore[union-attr]
        instance.event_log_storage._engine,  # type: ignore[attr-defined]
    ]
    for engine in engines:
        sqlalchemy.event.listen(engine, "before_cursor_execute", count)
    daemon_like_queries()
    assert catalog_queries  # the first round asks (so the counter sees them)
    catalog_queries.clear()
    for _ in range(3):
        daemon_like_queries()
    assert catalog_queries == []
