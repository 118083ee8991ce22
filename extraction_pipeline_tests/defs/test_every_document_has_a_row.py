"""documents.parquet holds every document with an outcome, unreadable ones included, and agrees
with `extraction-pipeline status` (on Postgres, the model simulator over HTTP)."""

import io
from collections import Counter

import dagster as dg
import pyarrow.parquet as pq
import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.operations.lifecycle import RetryPolicy
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.core.tables.refresh import FeedPosition
from extraction_pipeline.defs.table_refresh import changed_documents
from extraction_pipeline.instance.names import RANGE_END_TAG, RANGE_START_TAG
from extraction_pipeline.instance.status import status_report
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import definitions_for, tables_catch_up
from extraction_pipeline_tests.pdfs import encrypted_pdf, truncated_pdf

TABLES = ["documents", "invoices", "invoice_line_items", "review_queue"]


def read(settings: Settings, name: str) -> list[dict]:
    data = (settings.data_dir / "tables" / f"{name}.parquet").read_bytes()
    return pq.read_table(io.BytesIO(data)).to_pylist()


def register(
    instance: dg.DagsterInstance, settings: Settings, files: dict[str, bytes]
) -> dict[str, str]:
    registry = DocumentRegistry(LocalObjectStore(settings.data_dir))
    keys = {name: registry.register(name, data).record.document_key for name, data in files.items()}
    instance.add_dynamic_partitions("documents", list(keys.values()))
    return keys


def run(
    instance: dg.DagsterInstance, settings: Settings, job: str, keys: list[str]
) -> dg.ExecuteInProcessResult:
    """One ranged run over `keys` (adjacent in partition order), as the inbox sensor sends it."""
    return (
        definitions_for(settings)
        .resolve_job_def(job)
        .execute_in_process(
            instance=instance,
            tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
            raise_on_error=False,
        )
    )


GOOD = {
    "good.pdf": invoice_pdf(make_invoice(1)),
    "refused.pdf": invoice_pdf(make_invoice(2), extra_text="SIMULATE:REFUSE"),
}
BAD = {"broken.pdf": truncated_pdf(), "empty.pdf": b"", "locked.pdf": encrypted_pdf()}


@pytest.mark.parametrize("unreadable_job", ["source_job", "intake_job"])
def test_unreadable_documents_get_a_failed_row_with_their_reason_from_their_own_run(
    instance: dg.DagsterInstance,
    pipeline_settings: Settings,
    model_simulator: SimulatorControl,
    unreadable_job: str,
) -> None:
    """The sensor sends unreadable documents through source_job; a backfill of both assets
    through intake_job. Either run refreshes the tables at its end: no other refresh here."""
    keys = register(instance, pipeline_settings, {**GOOD, **BAD})
    good, bad = [keys[n] for n in GOOD], [keys[n] for n in BAD]
    registry = DocumentRegistry(LocalObjectStore(pipeline_settings.data_dir))
    defs = definitions_for(pipeline_settings)

    run(instance, pipeline_settings, "intake_job", good)
    unreadable_run = run(instance, pipeline_settings, unreadable_job, bad)

    assert not unreadable_run.success
    documents = read(pipeline_settings, "documents")
    assert sorted(row["document_key"] for row in documents) == sorted(keys.values())
    rows = {row["file_name"]: row for row in documents}
    assert {name: rows[name]["status"] for name in rows} == {
        "good.pdf": "extracted",
        "refused.pdf": "failed",
        "broken.pdf": "failed",
        "empty.pdf": "failed",
        "locked.pdf": "failed",
    }
    assert {name: rows[name]["error_kind"] for name in rows} == {
        "good.pdf": None,
        "refused.pdf": "refused",
        "broken.pdf": "CorruptPdf",
        "empty.pdf": "EmptyFile",
        "locked.pdf": "EncryptedPdf",
    }
    broken = rows["broken.pdf"]
    assert broken["error_message"].startswith(
        "CorruptPdf: broken.pdf: the PDF is truncated: no %%EOF marker"
    )
    assert rows["empty.pdf"]["error_message"] == (
        "EmptyFile: empty.pdf: the file is empty (0 bytes)"
    )
    assert broken["document_key"] == keys["broken.pdf"]
    assert broken["sha256"] == registry.get(keys["broken.pdf"]).sha256
    assert broken["run_id"] == unreadable_run.run_id
    assert broken["pages"] is None and broken["model"] is None and broken["attempts"] == 0
    assert broken["cost_usd_total"] == 0.0
    # Unreadable documents are dead letters, not review items: the queue keeps its meaning.
    assert [row["document_key"] for row in read(pipeline_settings, "review_queue")] == [
        keys["refused.pdf"]
    ]
    assert tables_catch_up(defs, instance) == []  # the runs brought the tables up to date


def test_status_counts_agree_with_the_documents_table(
    instance: dg.DagsterInstance, pipeline_settings: Settings, model_simulator: SimulatorControl
) -> None:
    keys = register(instance, pipeline_settings, {**GOOD, **BAD})
    run(instance, pipeline_settings, "intake_job", [keys[n] for n in GOOD])
    run(instance, pipeline_settings, "source_job", [keys[n] for n in BAD])

    report = status_report(
        instance, LocalObjectStore(pipeline_settings.data_dir), RetryPolicy(max_attempts=3)
    )

    table = Counter(row["status"] for row in read(pipeline_settings, "documents"))
    assert report.total == sum(table.values()) == 5
    assert table == {"extracted": 1, "failed": 4}
    assert report.counts["extracted"] == table["extracted"]
    assert report.counts["needs_review"] == table["needs_review"] == 0
    assert report.counts["dead_letter"] + report.counts["failed"] == table["failed"]
    assert report.counts["dead_letter"] == 4
    assert sum(report.counts.values()) == report.total


def test_the_feed_reads_source_failures_and_a_rerun_replaces_the_row(
    instance: dg.DagsterInstance, pipeline_settings: Settings
) -> None:
    keys = register(instance, pipeline_settings, BAD)
    first = run(instance, pipeline_settings, "source_job", list(keys.values()))

    paid, position = changed_documents(instance, FeedPosition())
    assert paid == dict.fromkeys(keys.values(), 0.0)  # unreadable documents cost nothing
    assert changed_documents(instance, position)[0] == {}

    again = run(instance, pipeline_settings, "source_job", [keys["broken.pdf"]])

    documents = read(pipeline_settings, "documents")
    assert Counter(row["document_key"] for row in documents) == Counter(keys.values())
    runs = {row["file_name"]: row["run_id"] for row in documents}
    assert runs == {
        "broken.pdf": again.run_id,
        "empty.pdf": first.run_id,
        "locked.pdf": first.run_id,
    }
    refresh = (
        definitions_for(pipeline_settings)
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(instance=instance, asset_selection=[dg.AssetKey(t) for t in TABLES])
    )
    metadata = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in refresh.get_asset_materialization_events()
    }
    assert metadata["documents"]["documents_changed"].value == 0
    assert metadata["documents"]["dagster/row_count"].value == 3
