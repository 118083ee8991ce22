"""Dead letters are recorded the same way whether the daemon ran the documents (inbox sensor,
runs, run-status sensors) or `extraction-pipeline ingest` did (in-process runs no sensor sees)."""

import io
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from extraction_pipeline.cli.ingest import ingest
from extraction_pipeline.cli.launcher import Environment
from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.operations.dead_letters import DeadLetterStore
from extraction_pipeline.core.operations.lifecycle import RetryPolicy
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.status import status_report
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.conftest import PROJECT_ROOT
from extraction_pipeline_tests.defs.helpers import definitions_for, drop
from extraction_pipeline_tests.pdfs import truncated_pdf
from extraction_pipeline_tests.webhook import webhook_receiver

DEAD_LETTERS = dg.AssetKey("dead_letters")
FILES = {
    "good.pdf": invoice_pdf(make_invoice(1)),
    "refused.pdf": invoice_pdf(make_invoice(2), extra_text="SIMULATE:REFUSE"),
    "broken.pdf": truncated_pdf(),
}


def through_the_daemon(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """What the daemon does: an inbox sensor tick, its runs, then the run-status sensors on each
    finished run. Returns the run ids."""
    defs = definitions_for(settings)
    resources = {"document_store": defs.resources["document_store"]}
    for name, data in FILES.items():
        drop(settings.inbox, name, data, age_seconds=5)
    with dg.build_sensor_context(
        instance=instance, definitions=defs, resources=resources
    ) as context:
        tick = defs.resolve_sensor_def("inbox_sensor")(context)
    assert isinstance(tick, dg.SensorResult)  # its partitions are added by the sensor itself
    return [
        run_like_the_daemon(
            instance, defs, request.job_name, request.partition_key, request.tags
        ).run_id
        for request in tick.run_requests or []
    ]


def run_like_the_daemon(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    job_name: str | None,
    partition_key: str | None,
    tags: Mapping[str, str],
) -> dg.ExecuteInProcessResult:
    """One run, then the run-status sensor the daemon evaluates for how it ended (dead_letters
    or run_notifications), with the sensor's asset events stored as the daemon stores them."""
    assert job_name is not None
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, partition_key=partition_key, tags=tags, raise_on_error=False
    )
    sensor = "run_notifications" if result.success else "dead_letters"
    status = dg.DagsterEventType.RUN_SUCCESS if result.success else dg.DagsterEventType.RUN_FAILURE
    (entry,) = instance.all_logs(result.run_id, of_type=status)
    with dg.build_run_status_sensor_context(
        sensor_name=sensor,
        dagster_event=entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"document_store": defs.resources["document_store"]},
    ) as run_context:
        context = run_context if result.success else run_context.for_run_failure()
        outcome = defs.resolve_sensor_def(sensor)(context)
    if isinstance(outcome, dg.SensorResult):
        for event in outcome.asset_events:
            instance.report_runless_asset_event(event)
    return result


def through_ingest(instance: dg.DagsterInstance, settings: Settings, folder: Path) -> list[str]:
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    environment = Environment(PROJECT_ROOT, folder.parent / "home", settings)
    files = sorted(folder.iterdir())
    return ingest(instance, environment, files, progress=io.StringIO()).run_ids


@pytest.mark.parametrize("path", ["daemon", "ingest"])
def test_dead_letters_are_the_same_whichever_path_ran_the_documents(
    instance: dg.DagsterInstance,
    pipeline_settings: Settings,
    model_simulator: SimulatorControl,
    tmp_path: Path,
    path: str,
) -> None:
    with webhook_receiver() as (url, received):
        settings = pipeline_settings.model_copy(
            update={
                "operations": pipeline_settings.operations.model_copy(update={"webhook_url": url})
            },
        )
        if path == "daemon":
            run_ids = through_the_daemon(instance, settings)
        else:
            run_ids = through_ingest(instance, settings, tmp_path / "scans")

    letters = DeadLetterStore(LocalObjectStore(settings.data_dir)).all()
    by_name = {letter.file_name: letter for letter in letters}
    assert sorted(by_name) == ["broken.pdf", "refused.pdf"]
    broken, refused = by_name["broken.pdf"], by_name["refused.pdf"]
    assert broken.error_kind == "CorruptPdf"
    assert broken.error.startswith("CorruptPdf: broken.pdf: the PDF is truncated: no %%EOF")
    assert refused.error_kind == "refused"
    assert refused.error.startswith("refused")
    assert broken.attempts == refused.attempts == 1
    assert {broken.run_id, refused.run_id} <= set(run_ids)
    assert broken.run_id != refused.run_id  # unreadable documents run on their own
    folder = settings.data_dir / "dead_letters"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{letter.document_key}.json" for letter in letters
    )
    table = pq.read_table(settings.data_dir / "tables" / "dead_letters.parquet").to_pylist()
    assert sorted((r["document_key"], r["error_kind"], r["error"]) for r in table) == sorted(
        (letter.document_key, letter.error_kind, letter.error) for letter in letters
    )
    announced = sorted(
        (p["document_key"], p["error_kind"]) for p in received if p["event"] == "dead_letter"
    )
    assert announced == sorted((letter.document_key, letter.error_kind) for letter in letters)
    latest = instance.get_latest_materialization_event(DEAD_LETTERS)
    assert latest is not None and latest.asset_materialization is not None
    assert latest.asset_materialization.metadata["dagster/row_count"].value == 2

    report = status_report(instance, LocalObjectStore(settings.data_dir), RetryPolicy())
    assert report.counts["dead_letter"] == len(report.dead_letters) == 2
    assert report.counts["extracted"] == 1
    assert {letter.document_key for letter in report.dead_letters} == set(
        report.documents_by_state["dead_letter"]
    )


@pytest.mark.parametrize("path", ["daemon", "ingest"])
def test_a_dead_letter_extracted_later_is_cleared_the_same_way(
    instance: dg.DagsterInstance,
    pipeline_settings: Settings,
    model_simulator: SimulatorControl,
    tmp_path: Path,
    path: str,
) -> None:
    invoice = make_invoice(5)
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "later.pdf").write_bytes(invoice_pdf(invoice))
    environment = Environment(PROJECT_ROOT, tmp_path / "home", pipeline_settings)
    model_simulator.set_faults(f"refuse:match={invoice.invoice_number}")
    (first,) = ingest(instance, environment, [folder / "later.pdf"], io.StringIO()).run_ids
    letters = DeadLetterStore(LocalObjectStore(pipeline_settings.data_dir))
    (letter,) = letters.all()
    assert (letter.error_kind, letter.run_id) == ("refused", first)
    model_simulator.set_faults()

    if path == "daemon":  # e.g. a backfill of the failed partition from the UI
        defs = definitions_for(pipeline_settings)
        again = run_like_the_daemon(instance, defs, "extraction_job", letter.document_key, {})
        assert again.success
    else:
        ingest(instance, environment, [folder / "later.pdf"], io.StringIO())

    assert letters.all() == []
    table = pq.read_table(pipeline_settings.data_dir / "tables" / "dead_letters.parquet")
    assert table.num_rows == 0
    latest = instance.get_latest_materialization_event(DEAD_LETTERS)
    assert latest is not None and latest.asset_materialization is not None
    assert latest.asset_materialization.metadata["cleared"].value == [letter.document_key]


def test_a_failed_document_another_run_has_taken_up_is_not_announced_dead(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    """The soak found it: a document failed its last allowed run while the retry schedule had
    already queued another; the dead letter went out, then that run extracted it."""
    settings = pipeline_settings.model_copy(
        update={"operations": pipeline_settings.operations.model_copy(update={"max_attempts": 1})},
    )
    defs = definitions_for(settings)
    drop(settings.inbox, "refused.pdf", FILES["refused.pdf"], age_seconds=5)
    with dg.build_sensor_context(
        instance=instance,
        definitions=defs,
        resources={"document_store": defs.resources["document_store"]},
    ) as context:
        tick = defs.resolve_sensor_def("inbox_sensor")(context)
    assert isinstance(tick, dg.SensorResult)
    (request,) = tick.run_requests or []
    key = request.partition_key
    assert key is not None
    instance.add_dynamic_partitions("documents", [key])
    # A retry of the document, created (not started yet) before the failed run is judged.
    retry = instance.create_run_for_job(
        job_def=defs.resolve_job_def("extraction_job"), tags={"dagster/partition": key}
    )
    run_like_the_daemon(instance, defs, request.job_name, key, request.tags)
    letters = DeadLetterStore(LocalObjectStore(settings.data_dir))
    assert letters.all() == []
    # Once nothing else has the document, the next failed run is judged as usual.
    instance.report_run_canceled(retry)
    run_like_the_daemon(instance, defs, request.job_name, key, request.tags)
    assert [letter.document_key for letter in letters.all()] == [key]
