"""source_document on Postgres: per-document outcomes inside one ranged run."""

import dagster as dg

from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.names import RANGE_END_TAG, RANGE_START_TAG, documents_partitions
from extraction_pipeline_tests.defs.helpers import definitions_for
from extraction_pipeline_tests.pdfs import encrypted_pdf, good_pdf, truncated_pdf

SOURCE = dg.AssetKey("source_document")


def test_ranged_run_materialises_the_good_and_fails_exactly_the_bad(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    registry = DocumentRegistry(LocalObjectStore(settings.data_dir))
    files = {
        "good one.pdf": good_pdf(1, pages=2),
        "broken.pdf": truncated_pdf(),
        "good two.pdf": good_pdf(2),
        "locked.pdf": encrypted_pdf(),
        "empty.pdf": b"",
    }
    keys = {name: registry.register(name, data).record.document_key for name, data in files.items()}
    instance.add_dynamic_partitions("documents", list(keys.values()))
    ordered = list(keys.values())

    job = definitions_for(settings).resolve_job_def("source_job")
    result = job.execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: ordered[0], RANGE_END_TAG: ordered[-1]},
        raise_on_error=False,
    )

    assert not result.success
    status = instance.get_status_by_partition(SOURCE, ordered, documents_partitions)
    good = {keys["good one.pdf"], keys["good two.pdf"]}
    assert {k for k, s in status.items() if s == dg.AssetPartitionStatus.MATERIALIZED} == good
    assert {k for k, s in status.items() if s == dg.AssetPartitionStatus.FAILED} == set(
        ordered
    ) - good

    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.user_failure_data.description
    assert f"{keys['broken.pdf']}: CorruptPdf: broken.pdf: the PDF is truncated" in message
    assert f"{keys['locked.pdf']}: EncryptedPdf" in message
    assert f"{keys['empty.pdf']}: EmptyFile" in message

    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SOURCE, asset_partitions=[keys["good one.pdf"]]), limit=1
    ).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["pages"].value == 2
    assert metadata["has_text_layer"].value is True
    assert metadata["file_name"].value == "good one.pdf"
    assert metadata["sha256"].value == registry.get(keys["good one.pdf"]).sha256
