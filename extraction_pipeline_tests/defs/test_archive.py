"""Archiving settled documents on Postgres: the sensor's decision and cursor, and what survives
(history, table rows, no second payment when the file comes back)."""

import io
import logging
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow.parquet as pq
import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.defs.run_sensors import settle_run
from extraction_pipeline.instance.archive import archive_settled
from extraction_pipeline.instance.history import document_history
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import definitions_for, drop
from extraction_pipeline_tests.defs.test_operations import run, tick
from extraction_pipeline_tests.pdfs import truncated_pdf

OLD = datetime.now(UTC) - timedelta(days=40)


@pytest.fixture
def archiving(pipeline_settings: Settings) -> Settings:
    operations = pipeline_settings.operations.model_copy(
        update={"max_attempts": 2, "archive_after_days": 30.0}
    )
    return pipeline_settings.model_copy(update={"operations": operations})


def sensor_tick(
    instance: dg.DagsterInstance, settings: Settings, name: str, cursor: str | None = None
) -> dg.SensorResult:
    defs = definitions_for(settings)
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        resources={"document_store": defs.resources["document_store"]},
    ) as context:
        result = defs.resolve_sensor_def(name)(context)
    assert isinstance(result, dg.SensorResult)
    return result


def apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the daemon does with the sensor's partition requests."""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.DeleteDynamicPartitionsRequest):
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
        else:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)


def documents_table(settings: Settings) -> set[str]:
    data = (settings.data_dir / "tables" / "documents.parquet").read_bytes()
    return {row["document_key"] for row in pq.read_table(io.BytesIO(data)).to_pylist()}


def test_settled_documents_are_archived_and_keep_history_rows_and_their_paid_answer(
    instance: dg.DagsterInstance, archiving: Settings, model_simulator: SimulatorControl
) -> None:
    registry = DocumentRegistry(LocalObjectStore(archiving.data_dir))
    flaky = make_invoice(2)
    files = {
        "extracted.pdf": (invoice_pdf(make_invoice(1)), OLD),
        "unreadable.pdf": (truncated_pdf(), OLD),  # a dead letter at once
        "flaky.pdf": (invoice_pdf(flaky), OLD),  # failed, one attempt of two left
        "young.pdf": (invoice_pdf(make_invoice(3)), datetime.now(UTC)),
    }
    keys = [registry.register(n, d, now=at).record.document_key for n, (d, at) in files.items()]
    extracted, unreadable, failed, young = keys
    instance.add_dynamic_partitions("documents", keys)
    model_simulator.set_faults(f"500:match={flaky.invoice_number}")
    for key in (extracted, failed, young):
        run(instance, archiving, "intake_job", key)
    failed_run = run(instance, archiving, "source_job", unreadable)
    assert not failed_run.success
    # What the dead_letters sensor does with a failed run (no daemon runs here).
    settle_run(
        instance,
        failed_run.dagster_run,
        "unreadable",
        registry.store,
        registry,
        archiving.operations,
        logging.getLogger(__name__),
    )
    model_simulator.set_faults()
    paid = model_simulator.requests()["count"]

    result = sensor_tick(instance, archiving, "archive_settled")

    (request,) = result.dynamic_partitions_requests or []
    assert isinstance(request, dg.DeleteDynamicPartitionsRequest)
    assert list(request.partition_keys) == [extracted, unreadable]  # not failed, not young
    assert result.cursor == "0"  # stopped at the young one: the next pass starts at the head
    apply(instance, result)
    assert instance.get_dynamic_partitions("documents") == [failed, young]

    # Schedules no longer see them; the failed one is still retried, and its run's refresh
    # keeps the archived documents' rows.
    assert tick(instance, archiving, "nightly_intake") == []
    (retry,) = tick(instance, archiving, "retry_failed")
    assert retry.partition_key == failed
    assert run(instance, archiving, "extraction_job", failed).success
    assert {extracted, unreadable, failed, young} <= documents_table(archiving)
    assert [
        a.outcome for a in document_history(instance, extracted) if a.asset == "extraction"
    ] == ["extracted"]

    # The same file dropped again: its partition comes back, its stored answer is reused.
    drop(archiving.inbox, "extracted.pdf", files["extracted.pdf"][0], age_seconds=5)
    restored = sensor_tick(instance, archiving, "inbox_sensor")
    (back,) = restored.run_requests or []
    assert back.partition_key == extracted
    apply(instance, restored)
    assert run(instance, archiving, "intake_job", extracted).success
    assert model_simulator.requests()["count"] == paid + 1  # the retry only: nothing paid twice


def test_archiving_is_off_by_default_and_the_command_reports_before_it_removes(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    registry = DocumentRegistry(LocalObjectStore(pipeline_settings.data_dir))
    keys = [
        registry.register(f"d{i}.pdf", invoice_pdf(make_invoice(i)), now=OLD).record.document_key
        for i in (1, 2)
    ]
    instance.add_dynamic_partitions("documents", keys)
    run(instance, pipeline_settings, "intake_job", keys[0])
    result = sensor_tick(instance, pipeline_settings, "archive_settled")
    assert not result.dynamic_partitions_requests
    assert "EXTRACTION_ARCHIVE_AFTER_DAYS=0" in str(result.skip_reason)

    def archive(dry_run: bool) -> list[str]:
        report = archive_settled(
            instance, registry.store, datetime.now(UTC), timedelta(days=30), dry_run=dry_run
        )
        assert report.live_before == 2 and report.kept == {"unsettled": 1}
        return report.archived

    assert archive(dry_run=True) == [keys[0]]
    assert instance.get_dynamic_partitions("documents") == keys
    assert archive(dry_run=False) == [keys[0]]
    assert instance.get_dynamic_partitions("documents") == [keys[1]]
