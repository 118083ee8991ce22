"""Archiving settled documents on Postgres: the sensor's decision and cursor, and what survives
(history, table rows, no second payment when the file comes back)."""

import io
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster._core.storage.partition_status_cache import (
    AssetStatusCacheValue,
    get_and_update_asset_status_cache_value,
)

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.defs.run_sensors import settle_run
from extraction_pipeline.instance.archive import archive_settled
from extraction_pipeline.instance.history import document_history
from extraction_pipeline.instance.names import documents_partitions as documents
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


def stored_status(instance: dg.DagsterInstance, asset: str) -> dict[str, Any]:
    """The partition status Dagster keeps for `asset`, as key sets and its stamp."""
    (record,) = instance.get_asset_records([dg.AssetKey(asset)])
    return _readable(record.asset_entry.cached_status)


def _readable(value: AssetStatusCacheValue | None) -> dict[str, Any]:
    assert value is not None
    return {
        "stamp": value.partitions_def_id,
        "latest_storage_id": value.latest_storage_id,
        "earliest_in_progress": value.earliest_in_progress_materialization_event_id,
        "materialized": set(
            value.deserialize_materialized_partition_subsets(documents).get_partition_keys()
        ),
        "failed": set(value.deserialize_failed_partition_subsets(documents).get_partition_keys()),
        "in_progress": set(
            value.deserialize_in_progress_partition_subsets(documents).get_partition_keys()
        ),
    }


def read_status_as_the_ui_does(instance: dg.DagsterInstance) -> None:
    for asset in ("source_document", "extraction"):
        get_and_update_asset_status_cache_value(instance, dg.AssetKey(asset), documents)


def assert_status_stored_for_the_live_set(instance: dg.DagsterInstance) -> None:
    """Stamped for the partitions as they are, so Dagster's readers (the UI) only add to it
    what is newer, and what they read is what Dagster builds from the whole history when
    nothing is stored."""
    stamp = instance.get_dynamic_partitions_definition_id("documents")
    for asset in ("source_document", "extraction"):
        key = dg.AssetKey(asset)
        assert stored_status(instance, asset)["stamp"] == stamp
        read = get_and_update_asset_status_cache_value(instance, key, documents)
        instance.wipe_asset_cached_status([key])
        rebuilt = get_and_update_asset_status_cache_value(instance, key, documents)
        assert _readable(read) == _readable(rebuilt)


def latest_of_every_partition(instance: dg.DagsterInstance, keys: list[str]) -> set[str]:
    """The partitions for which the storage answers Dagster's question without partitions,
    checked equal to its answer for those partitions asked by name."""
    source, materialized = dg.AssetKey("source_document"), dg.DagsterEventType.ASSET_MATERIALIZATION
    storage = instance.event_log_storage
    latest = storage.get_latest_storage_id_by_partition(source, materialized)
    by_name = storage.get_latest_storage_id_by_partition(source, materialized, set(keys))
    assert latest == {key: by_name[key] for key in latest}
    return set(latest)


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

    read_status_as_the_ui_does(instance)  # stored for the four: the tick carries it over
    result = sensor_tick(instance, archiving, "archive_settled")

    assert not result.dynamic_partitions_requests  # the sensor removes them itself
    assert instance.get_dynamic_partitions("documents") == [failed, young]  # not failed, young
    assert result.cursor == "0"  # stopped at the young one: the next pass starts at the head
    # The assets' partition status is stored for the live set, as Dagster would rebuild it.
    assert_status_stored_for_the_live_set(instance)
    # Dagster's "latest event of every partition" (its staleness check of one partition asks
    # it of the asset and its parent) is answered over the live partitions.
    assert latest_of_every_partition(instance, keys) == {failed, young}

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
    # Its partition is back with its history: the status stored for the new set says extracted.
    assert extracted in stored_status(instance, "extraction")["materialized"]
    assert_status_stored_for_the_live_set(instance)
    assert latest_of_every_partition(instance, keys) == {extracted, failed, young}
    assert run(instance, archiving, "intake_job", extracted).success
    assert model_simulator.requests()["count"] == paid + 1  # the retry only: nothing paid twice


def test_archiving_is_off_by_default_and_the_command_reports_before_it_removes(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    registry = DocumentRegistry(LocalObjectStore(pipeline_settings.data_dir))
    invoices = [make_invoice(i) for i in (1, 2, 3)]
    keys = [
        registry.register(f"d{i}.pdf", invoice_pdf(invoice), now=OLD).record.document_key
        for i, invoice in enumerate(invoices)
    ]
    instance.add_dynamic_partitions("documents", keys)
    run(instance, pipeline_settings, "intake_job", keys[0])
    model_simulator.set_faults(f"500:match={invoices[2].invoice_number}")
    assert not run(instance, pipeline_settings, "intake_job", keys[2]).success  # failed, live
    result = sensor_tick(instance, pipeline_settings, "archive_settled")
    assert not result.dynamic_partitions_requests
    assert "EXTRACTION_ARCHIVE_AFTER_DAYS=0" in str(result.skip_reason)

    def archive(dry_run: bool) -> list[str]:
        report = archive_settled(
            instance, registry.store, datetime.now(UTC), timedelta(days=30), dry_run=dry_run
        )
        assert report.live_before == 3 and report.kept == {"unsettled": 2}
        return report.archived

    assert archive(dry_run=True) == [keys[0]]
    assert instance.get_dynamic_partitions("documents") == keys
    instance.wipe_asset_cached_status([dg.AssetKey("source_document"), dg.AssetKey("extraction")])
    assert archive(dry_run=False) == [keys[0]]
    assert instance.get_dynamic_partitions("documents") == keys[1:]
    # Built for the live set (none was stored), the failed document among them.
    assert stored_status(instance, "extraction")["failed"] == {keys[2]}
    assert_status_stored_for_the_live_set(instance)
