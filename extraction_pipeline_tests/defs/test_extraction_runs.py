"""Ranged runs of source_document + extraction on Postgres, against the model simulator."""

import dagster as dg

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.names import (
    PARENT_RUN_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    documents_partitions,
)
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import definitions_for
from extraction_pipeline_tests.pdfs import truncated_pdf

SOURCE = dg.AssetKey("source_document")
EXTRACTION = dg.AssetKey("extraction")


def register(settings: Settings, files: dict[str, bytes]) -> dict[str, str]:
    registry = DocumentRegistry(LocalObjectStore(settings.data_dir))
    return {name: registry.register(name, data).record.document_key for name, data in files.items()}


def run_range(
    instance: dg.DagsterInstance,
    settings: Settings,
    keys: list[str],
    job: str,
    tags: dict[str, str] | None = None,
):
    return (
        definitions_for(settings)
        .resolve_job_def(job)
        .execute_in_process(
            instance=instance,
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1], **(tags or {})},
            raise_on_error=False,
        )
    )


def statuses(instance: dg.DagsterInstance, asset: dg.AssetKey, keys: list[str]) -> dict:
    return instance.get_status_by_partition(asset, keys, documents_partitions)


def test_ranged_run_extracts_the_good_and_fails_exactly_the_bad(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    invoices = {f"inv{i}.pdf": make_invoice(i) for i in (1, 2, 3)}
    files = {name: invoice_pdf(invoice) for name, invoice in invoices.items()}
    files["refused.pdf"] = invoice_pdf(make_invoice(4), extra_text="SIMULATE:REFUSE")
    files["broken.pdf"] = truncated_pdf()
    keys = register(pipeline_settings, files)
    ordered = list(keys.values())
    instance.add_dynamic_partitions("documents", ordered)

    result = run_range(instance, pipeline_settings, ordered, "intake_job")

    assert not result.success
    good = {keys[name] for name in invoices}
    extraction = statuses(instance, EXTRACTION, ordered)
    materialized = {k for k, s in extraction.items() if s == dg.AssetPartitionStatus.MATERIALIZED}
    assert materialized == good
    failed = {k for k, s in extraction.items() if s == dg.AssetPartitionStatus.FAILED}
    assert failed == {keys["refused.pdf"], keys["broken.pdf"]}
    source = statuses(instance, SOURCE, ordered)
    assert source[keys["broken.pdf"]] == dg.AssetPartitionStatus.FAILED
    assert source[keys["refused.pdf"]] == dg.AssetPartitionStatus.MATERIALIZED

    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EXTRACTION, asset_partitions=[keys["inv2.pdf"]]), limit=1
    ).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["record"].value["invoice_number"] == invoices["inv2.pdf"].invoice_number
    assert metadata["record"].value["total"] == invoices["inv2.pdf"].total
    assert metadata["input_tokens"].value > 0 and metadata["output_tokens"].value > 0
    assert metadata["cost_usd"].value > 0
    assert metadata["model"].value == pipeline_settings.extraction.model
    assert metadata["status"].value == "extracted"

    refused = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=EXTRACTION, asset_partitions=[keys["refused.pdf"]]), limit=1
    ).records[0]
    assert refused.asset_observation.metadata["error_kind"].value == "refused"


def test_second_run_pays_nothing_for_documents_already_extracted(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    files = {f"inv{i}.pdf": invoice_pdf(make_invoice(i)) for i in (1, 2, 3)}
    ordered = list(register(pipeline_settings, files).values())
    instance.add_dynamic_partitions("documents", ordered)
    assert run_range(instance, pipeline_settings, ordered, "intake_job").success
    paid_calls = model_simulator.requests()["count"]
    assert paid_calls == 3

    again = run_range(instance, pipeline_settings, ordered, "intake_job")

    assert again.success
    assert model_simulator.requests()["count"] == paid_calls
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EXTRACTION, asset_partitions=[ordered[0]]), limit=1
    ).records
    assert records[0].asset_materialization.metadata["cache_hit"].value is True


def test_a_run_retry_does_not_pay_again_for_what_its_parent_failed_for_good(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    """A run retry (its worker died, say) after a run that had recorded a refusal: the refusal
    stands without a second call; the successes are served free from the store."""
    files = {f"inv{i}.pdf": invoice_pdf(make_invoice(i)) for i in (1, 2)}
    files["refused.pdf"] = invoice_pdf(make_invoice(4), extra_text="SIMULATE:REFUSE")
    keys = register(pipeline_settings, files)
    ordered = list(keys.values())
    instance.add_dynamic_partitions("documents", ordered)
    first = run_range(instance, pipeline_settings, ordered, "intake_job")
    assert not first.success and model_simulator.requests()["count"] == 3

    retry = run_range(
        instance, pipeline_settings, ordered, "intake_job", {PARENT_RUN_TAG: first.run_id}
    )

    assert not retry.success  # the refusal still fails its partition
    assert model_simulator.requests()["count"] == 3  # nothing asked again
    failure = next(e for e in retry.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    failed = failure.step_failure_data.user_failure_data.metadata["failed_documents"].value
    assert set(failed) == {keys["refused.pdf"]}
    hits = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EXTRACTION, asset_partitions=[keys["inv1.pdf"]]), limit=1
    ).records
    assert hits[0].run_id == retry.run_id
    assert hits[0].asset_materialization.metadata["cache_hit"].value is True
    # Without a parent, a run asks again: a person re-running a refused document means it.
    again = run_range(instance, pipeline_settings, ordered, "intake_job")
    assert not again.success and model_simulator.requests()["count"] == 4


def test_backfill_of_extraction_alone_reads_the_stored_originals(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    ordered = list(register(pipeline_settings, {"a.pdf": invoice_pdf(make_invoice(9))}).values())
    instance.add_dynamic_partitions("documents", ordered)
    job = definitions_for(pipeline_settings).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance, partition_key=ordered[0], asset_selection=[EXTRACTION]
    )
    assert result.success
    assert (
        statuses(instance, EXTRACTION, ordered)[ordered[0]] == dg.AssetPartitionStatus.MATERIALIZED
    )
    assert instance.get_materialized_partitions(SOURCE) == set()


def test_step_retry_asks_again_only_for_the_transient_failure(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    invoices = [make_invoice(i) for i in (1, 2, 3)]
    files = {f"inv{i}.pdf": invoice_pdf(invoice) for i, invoice in enumerate(invoices)}
    ordered = list(register(pipeline_settings, files).values())
    instance.add_dynamic_partitions("documents", ordered)
    # Two 500s for the first invoice: more than the agent's own retries (1), so its step fails
    # with a retryable error; the step retry then succeeds.
    model_simulator.set_faults(f"500:match={invoices[0].invoice_number}:count=2")

    result = run_range(instance, pipeline_settings, ordered, "intake_job")

    assert result.success
    assert statuses(instance, EXTRACTION, ordered) == dict.fromkeys(
        ordered, dg.AssetPartitionStatus.MATERIALIZED
    )
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1
    # 3 first answers + 1 agent retry + 1 after the step retry; the others were not asked again.
    assert model_simulator.requests()["count"] == 5
