import dagster as dg
import psycopg2

from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.postgres import libpq_dsn
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


def test_event_log_storage_is_the_pooled_one_from_dagster_yaml(
    instance: dg.DagsterInstance,
) -> None:
    from extraction_pipeline.instance.event_log import PooledPostgresEventLogStorage

    assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
    assert instance.event_log_storage._engine.pool.size() == 2  # a pool, not NullPool
