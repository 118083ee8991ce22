"""The Parquet tables, their checks and their automation, on a small corpus on Postgres."""

import io

import dagster as dg
import pyarrow.parquet as pq
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.names import RANGE_END_TAG, RANGE_START_TAG
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import definitions_for, tables_catch_up
from extraction_pipeline_tests.simulator_fixture import invoice_text, text_pdf

TABLES = ["documents", "invoices", "invoice_line_items", "review_queue"]


def read(settings: Settings, name: str) -> list[dict]:
    data = (settings.data_dir / "tables" / f"{name}.parquet").read_bytes()
    return pq.read_table(io.BytesIO(data)).to_pylist()


def corpus(instance: dg.DagsterInstance, settings: Settings) -> dict[str, str]:
    registry = DocumentRegistry(LocalObjectStore(settings.data_dir))
    files = {
        "good.pdf": invoice_pdf(make_invoice(1)),
        "bad totals.pdf": text_pdf(invoice_text("INV-BAD", total="999.00")),
        "refused.pdf": invoice_pdf(make_invoice(2), extra_text="SIMULATE:REFUSE"),
    }
    keys = {name: registry.register(name, data).record.document_key for name, data in files.items()}
    instance.add_dynamic_partitions("documents", list(keys.values()))
    return keys


def extract(instance: dg.DagsterInstance, settings: Settings, keys: list[str]) -> None:
    definitions_for(settings).resolve_job_def("intake_job").execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )


def refresh(instance: dg.DagsterInstance, settings: Settings) -> dg.ExecuteInProcessResult:
    job = definitions_for(settings).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey(name) for name in TABLES]
    )


def test_tables_hold_records_lines_documents_and_review_reasons(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    keys = corpus(instance, pipeline_settings)
    extract(instance, pipeline_settings, list(keys.values()))

    result = refresh(instance, pipeline_settings)

    assert result.success
    good = make_invoice(1)
    invoices = {row["document_key"]: row for row in read(pipeline_settings, "invoices")}
    assert set(invoices) == {keys["good.pdf"], keys["bad totals.pdf"]}
    assert invoices[keys["good.pdf"]]["total"] == good.total
    assert str(invoices[keys["good.pdf"]]["invoice_date"]) == good.invoice_date.isoformat()
    lines = [
        r
        for r in read(pipeline_settings, "invoice_line_items")
        if r["document_key"] == keys["good.pdf"]
    ]
    assert [r["amount"] for r in lines] == [item.amount for item in good.line_items]
    documents = {row["document_key"]: row for row in read(pipeline_settings, "documents")}
    assert documents[keys["good.pdf"]]["status"] == "extracted"
    assert documents[keys["bad totals.pdf"]]["status"] == "needs_review"
    assert documents[keys["refused.pdf"]]["status"] == "failed"
    assert documents[keys["good.pdf"]]["cost_usd"] > 0
    review = {row["document_key"]: row for row in read(pipeline_settings, "review_queue")}
    assert set(review) == {keys["bad totals.pdf"], keys["refused.pdf"]}
    assert review[keys["bad totals.pdf"]]["checks_failed"] == "totals_add_up"
    assert "999.00" in review[keys["bad totals.pdf"]]["review_reason"]
    assert review[keys["refused.pdf"]]["error_kind"] == "refused"

    materializations = {
        event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert materializations["invoices"]["dagster/row_count"].value == 2
    assert materializations["documents"]["cost_usd_total"].value > 0

    checks = {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }
    assert checks["totals_add_up"].passed is False
    assert checks["totals_add_up"].metadata["failing_documents"].value == 1
    assert checks["required_fields"].passed and checks["dates_parse"].passed


def test_refresh_reads_only_what_changed(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    keys = corpus(instance, pipeline_settings)
    extract(instance, pipeline_settings, list(keys.values()))
    refresh(instance, pipeline_settings)

    second = refresh(instance, pipeline_settings)

    metadata = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in second.get_asset_materialization_events()
    }
    assert metadata["documents"]["documents_changed"].value == 0
    assert metadata["documents"]["dagster/row_count"].value == 3


def test_an_extraction_run_refreshes_the_tables_itself(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    keys = corpus(instance, pipeline_settings)
    instance.add_dynamic_partitions("documents", ["never-extracted-000000000000"])
    defs = definitions_for(pipeline_settings)

    extract(instance, pipeline_settings, list(keys.values()))  # one refused: a failed partition

    assert len(read(pipeline_settings, "invoices")) == 2
    assert len(read(pipeline_settings, "review_queue")) == 2
    assert instance.get_latest_materialization_event(dg.AssetKey("invoices")) is not None
    assert tables_catch_up(defs, instance) == []  # nothing left for the sensor to do


def test_after_an_intake_run_the_tables_are_in_sync_and_checked(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    keys = corpus(instance, pipeline_settings)
    defs = definitions_for(pipeline_settings)

    extract(instance, pipeline_settings, list(keys.values()))  # one refused: a failed partition

    # What the UI shows as "Unsynced" (stale). Dagster has no public API for it; the resolver
    # is the one the UI's GraphQL uses.
    resolver = CachingStaleStatusResolver(
        instance, defs.resolve_asset_graph(), LoadingContextForTest(instance)
    )
    for table in TABLES:
        assert resolver.get_status(dg.AssetKey(table)) == StaleStatus.FRESH, (
            table,
            resolver.get_stale_causes(dg.AssetKey(table)),
        )
    run_id = instance.get_latest_materialization_event(dg.AssetKey("invoices")).run_id
    evaluations = {
        record.event_log_entry.dagster_event.event_specific_data.check_name: (
            record.event_log_entry.dagster_event.event_specific_data
        )
        for record in instance.get_records_for_run(
            run_id, of_type={dg.DagsterEventType.ASSET_CHECK_EVALUATION}
        ).records
    }
    assert set(evaluations) == {"required_fields", "totals_add_up", "dates_parse"}
    assert evaluations["totals_add_up"].passed is False
    assert evaluations["required_fields"].passed is True
    assert all(e.asset_key == dg.AssetKey("invoices") for e in evaluations.values())


def test_the_sensor_catches_up_on_outcomes_no_run_refreshed_once_no_run_is_under_way(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    keys = list(corpus(instance, pipeline_settings).values())
    defs = definitions_for(pipeline_settings)
    assert tables_catch_up(defs, instance) == []  # no outcome yet
    extract(instance, pipeline_settings, keys[1:])  # refreshes the tables at its end
    assert tables_catch_up(defs, instance) == []
    # An outcome recorded by something that did not refresh the tables (e.g. a run that died
    # right after).
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="extraction", partition=keys[0])
    )
    pending = instance.create_run_for_job(defs.resolve_job_def("extraction_job"))  # NOT_STARTED
    assert tables_catch_up(defs, instance) == []  # a run under way refreshes at its end
    instance.report_run_canceled(pending)

    (request,) = tables_catch_up(defs, instance)

    assert {key.to_user_string() for key in request.asset_selection or []} == set(TABLES)
    refresh(instance, pipeline_settings)
    assert tables_catch_up(defs, instance) == []
