"""Schedules, history and dead letters on Postgres, with the model simulator over HTTP."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.events import AssetMaterializationPlannedData, AssetObservationData

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.operations.dead_letters import DeadLetterStore
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.facts import extraction_attempts_of
from extraction_pipeline.instance.history import document_history
from extraction_pipeline.instance.names import RETRYABLE_TAG
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import definitions_for
from extraction_pipeline_tests.pdfs import truncated_pdf
from extraction_pipeline_tests.webhook import webhook_receiver

LONG_AGO = datetime.now(UTC) - timedelta(hours=1)
TICK = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def register(
    settings: Settings, instance: dg.DagsterInstance, files: dict[str, bytes]
) -> list[str]:
    registry = DocumentRegistry(LocalObjectStore(settings.data_dir))
    keys = [registry.register(n, d, now=LONG_AGO).record.document_key for n, d in files.items()]
    instance.add_dynamic_partitions("documents", keys)
    return keys


def run(
    instance: dg.DagsterInstance, settings: Settings, job: str, key: str
) -> dg.ExecuteInProcessResult:
    return (
        definitions_for(settings)
        .resolve_job_def(job)
        .execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
    )


def tick(instance: dg.DagsterInstance, settings: Settings, name: str) -> list[dg.RunRequest]:
    defs = definitions_for(settings)
    # Contexts are closed explicitly: closed by the garbage collector later, they would reset
    # Dagster's "current defs-state storage" context variable in the middle of another test.
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=TICK,
        resources={"document_store": defs.resources["document_store"]},
    ) as context:
        result = defs.resolve_schedule_def(name)(context)
    if isinstance(result, dg.SkipReason):
        return []
    return list(result) if isinstance(result, list) else [result]


def partitions_of(request: dg.RunRequest) -> list[str]:
    if request.partition_key:
        return [request.partition_key]
    return [
        request.tags["dagster/asset_partition_range_start"],
        request.tags["dagster/asset_partition_range_end"],
    ]


@pytest.fixture
def ops_settings(pipeline_settings: Settings) -> Settings:
    return pipeline_settings.model_copy(
        update={"operations": pipeline_settings.operations.model_copy(update={"max_attempts": 2})}
    )


def test_nightly_intake_runs_never_attempted_documents_in_contiguous_batches(
    instance: dg.DagsterInstance, ops_settings: Settings, model_simulator: SimulatorControl
) -> None:
    files = {f"d{i}.pdf": invoice_pdf(make_invoice(i)) for i in (1, 3, 4, 5, 6)}
    files = {
        "d1.pdf": files["d1.pdf"],
        "d2.pdf": truncated_pdf(),
        **{k: v for k, v in files.items() if k != "d1.pdf"},
    }
    d1, d2, d3, d4, d5, d6 = register(ops_settings, instance, files)
    assert run(instance, ops_settings, "intake_job", d1).success
    assert not run(instance, ops_settings, "source_job", d2).success  # unreadable
    job = definitions_for(ops_settings).resolve_job_def("intake_job")
    instance.create_run_for_job(  # a queued run already covers d5
        job_def=job, status=dg.DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": d5}
    )

    requests = tick(instance, ops_settings, "nightly_intake")

    assert [partitions_of(r) for r in requests] == [[d3, d4], [d6]]
    assert all(r.tags["extraction_pipeline/trigger"] == "nightly_intake" for r in requests)
    again = tick(instance, ops_settings, "nightly_intake")
    assert [r.run_key for r in again] == [r.run_key for r in requests]  # same tick: deduplicated


def test_nightly_intake_leaves_fresh_registrations_to_the_sensor(
    instance: dg.DagsterInstance, ops_settings: Settings
) -> None:
    registry = DocumentRegistry(LocalObjectStore(ops_settings.data_dir))
    key = registry.register("new.pdf", invoice_pdf(make_invoice(1))).record.document_key
    instance.add_dynamic_partitions("documents", [key])
    assert tick(instance, ops_settings, "nightly_intake") == []


def test_retry_schedule_retries_transient_failures_up_to_the_cap(
    instance: dg.DagsterInstance, ops_settings: Settings, model_simulator: SimulatorControl
) -> None:
    flaky, refused = make_invoice(1), make_invoice(2)
    k_flaky, k_refused = register(
        ops_settings,
        instance,
        {
            "flaky.pdf": invoice_pdf(flaky),
            "refused.pdf": invoice_pdf(refused, extra_text="SIMULATE:REFUSE"),
        },
    )
    model_simulator.set_faults(f"500:match={flaky.invoice_number}")
    assert not run(instance, ops_settings, "intake_job", k_flaky).success
    assert not run(instance, ops_settings, "intake_job", k_refused).success

    (request,) = tick(instance, ops_settings, "retry_failed")
    assert partitions_of(request) == [k_flaky] and request.job_name in (None, "extraction_job")

    assert not run(instance, ops_settings, "extraction_job", k_flaky).success  # attempt 2 of 2
    assert tick(instance, ops_settings, "retry_failed") == []  # dead letter now
    # Read for all failed documents at once (two queries per thousand), as the tick does.
    assert extraction_attempts_of(instance, [k_flaky, k_refused, "never-planned"]) == {
        k_flaky: (2, True),
        k_refused: (1, False),
        "never-planned": (0, None),
    }
    # The retry schedule decodes a failure only where the verdict depends on it: a document
    # that used up its attempts is a dead letter whatever its last failure said.
    assert extraction_attempts_of(instance, [k_flaky, k_refused], retryability_below=2) == {
        k_flaky: (2, None),
        k_refused: (1, False),
    }


def test_a_failures_retryability_is_indexed_and_read_without_the_tag_too(
    instance: dg.DagsterInstance, ops_settings: Settings
) -> None:
    (key,) = register(
        ops_settings,
        instance,
        {"refused.pdf": invoice_pdf(make_invoice(3), extra_text="SIMULATE:REFUSE")},
    )
    assert not run(instance, ops_settings, "intake_job", key).success
    observed = dg.DagsterEventType.ASSET_OBSERVATION
    extraction = dg.AssetKey("extraction")
    # Indexed: Dagster's reader of indexed tags returns it, so the retry tick reads no event.
    assert instance.event_log_storage.get_latest_tags_by_partition(
        extraction, observed, [RETRYABLE_TAG], [key]
    ) == {key: {RETRYABLE_TAG: "false"}}
    assert extraction_attempts_of(instance, [key]) == {key: (1, False)}

    # The same failure in a later run, recorded as versions before the tag did: read from the
    # event itself.
    (record,) = instance.get_event_records(
        dg.EventRecordsFilter(observed, asset_key=extraction, asset_partitions=[key])
    )
    failure = record.asset_observation
    assert failure is not None and failure.tags == {RETRYABLE_TAG: "false"}
    untagged = dg.AssetObservation(extraction, partition=key, metadata=failure.metadata)
    planned = AssetMaterializationPlannedData(extraction, partition=key)
    for event_type, data in (
        (dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, planned),
        (observed, AssetObservationData(untagged)),
    ):
        event = dg.DagsterEvent(event_type.value, "extraction_job", event_specific_data=data)
        instance.store_event(record.event_log_entry._replace(run_id="later", dagster_event=event))

    assert extraction_attempts_of(instance, [key]) == {key: (2, False)}


def test_history_shows_every_attempt_in_order_with_its_error(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    invoice = make_invoice(5)
    (key,) = register(pipeline_settings, instance, {"a.pdf": invoice_pdf(invoice)})
    model_simulator.set_faults(f"refuse:match={invoice.invoice_number}")
    first = run(instance, pipeline_settings, "intake_job", key)
    second = run(instance, pipeline_settings, "extraction_job", key)
    model_simulator.set_faults()
    third = run(instance, pipeline_settings, "extraction_job", key)
    assert third.success

    attempts = [a for a in document_history(instance, key) if a.asset == "extraction"]

    assert [a.run_id for a in attempts] == [first.run_id, second.run_id, third.run_id]
    assert [a.outcome for a in attempts] == ["failed", "failed", "extracted"]
    assert [a.error_kind for a in attempts] == ["refused", "refused", None]
    assert "refused" in (attempts[0].error or "")
    assert all(a.input_tokens and a.cost_usd for a in attempts)
    assert [a.time for a in attempts] == sorted(a.time for a in attempts)
    source = [a for a in document_history(instance, key) if a.asset == "source_document"]
    assert [a.outcome for a in source] == ["materialized"]


def failure_context(
    instance: dg.DagsterInstance, settings: Settings, result: dg.ExecuteInProcessResult
) -> dg.RunFailureSensorContext:
    (entry,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    defs = definitions_for(settings)
    return dg.build_run_status_sensor_context(
        sensor_name="dead_letters",
        dagster_event=entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"document_store": defs.resources["document_store"]},
    ).for_run_failure()


@pytest.mark.parametrize("webhook_status", [200, 500])
def test_dead_letter_is_recorded_and_announced_and_a_failing_webhook_changes_nothing(
    instance: dg.DagsterInstance,
    ops_settings: Settings,
    model_simulator: SimulatorControl,
    webhook_status: int,
) -> None:
    with webhook_receiver(status=webhook_status) as (url, received):
        settings = ops_settings.model_copy(
            update={"operations": ops_settings.operations.model_copy(update={"webhook_url": url})}
        )
        (key,) = register(
            settings,
            instance,
            {"r.pdf": invoice_pdf(make_invoice(3), extra_text="SIMULATE:REFUSE")},
        )
        result = run(instance, settings, "intake_job", key)
        sensor = definitions_for(settings).resolve_sensor_def("dead_letters")

        with failure_context(instance, settings, result) as context:
            outcome = sensor(context)

    (letter,) = DeadLetterStore(LocalObjectStore(settings.data_dir)).all()
    assert letter.document_key == key and letter.error_kind == "refused"
    assert letter.run_id == result.run_id
    assert (settings.data_dir / "tables" / "dead_letters.parquet").exists()
    assert isinstance(outcome, dg.SensorResult) and outcome.asset_events
    assert received[0]["event"] == "dead_letter"
    assert received[0]["document_key"] == key and received[0]["attempts"] == 1
    assert len(received) == (1 if webhook_status == 200 else 3)  # retried when failing


def test_failed_run_that_will_be_retried_is_not_a_dead_letter(
    instance: dg.DagsterInstance, ops_settings: Settings, model_simulator: SimulatorControl
) -> None:
    (key,) = register(
        ops_settings,
        instance,
        {"r.pdf": invoice_pdf(make_invoice(3), extra_text="SIMULATE:REFUSE")},
    )
    result = run(instance, ops_settings, "intake_job", key)
    instance.add_run_tags(result.run_id, {"dagster/will_retry": "true"})
    sensor = definitions_for(ops_settings).resolve_sensor_def("dead_letters")
    with failure_context(instance, ops_settings, result) as context:
        assert sensor(context) is None
    assert DeadLetterStore(LocalObjectStore(ops_settings.data_dir)).all() == []
