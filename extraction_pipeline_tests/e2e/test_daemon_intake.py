"""The whole path with a real dagster-daemon on Postgres and the model simulator over HTTP:
drop folder -> sensor -> runs -> source_document and extraction -> Parquet tables."""

import io
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.instance.names import documents_partitions
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import drop
from extraction_pipeline_tests.e2e.processes import dagster_home, start, stop, wait_for
from extraction_pipeline_tests.pdfs import truncated_pdf
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

SOURCE = dg.AssetKey("source_document")
EXTRACTION = dg.AssetKey("extraction")
DAGSTER_DAEMON = str(Path(sys.executable).parent / "dagster-daemon")


def read_table(data_dir: Path, name: str) -> list[dict]:
    path = data_dir / "tables" / f"{name}.parquet"
    if not path.exists():
        return []
    return pq.read_table(io.BytesIO(path.read_bytes())).to_pylist()


def test_dropped_pdfs_reach_the_tables_through_a_real_daemon(
    tmp_path: Path, pg_url: str, instance: dg.DagsterInstance, model_simulator: SimulatorControl
) -> None:
    inbox, data_dir = tmp_path / "inbox", tmp_path / "data"
    inbox.mkdir()
    env = {
        "DAGSTER_HOME": str(dagster_home(tmp_path)),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_DATA_DIR": str(data_dir),
        "EXTRACTION_INBOX": str(inbox),
        "EXTRACTION_SENSOR_INTERVAL": "1",
        "EXTRACTION_TABLES_INTERVAL": "1",
        "EXTRACTION_SETTLE_SECONDS": "0.5",
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
    }
    daemon = start([DAGSTER_DAEMON, "run", "-w", "workspace.yaml"], env, tmp_path / "daemon.log")
    good = make_invoice(1, pages=2)
    try:
        drop(inbox, "invoice A.pdf", invoice_pdf(good))
        drop(inbox, "refused.pdf", invoice_pdf(make_invoice(2), extra_text="SIMULATE:REFUSE"))
        drop(inbox, "broken.pdf", truncated_pdf())

        def done() -> bool:
            invoices = read_table(data_dir, "invoices")
            review = read_table(data_dir, "review_queue")
            runs = instance.get_runs()
            finished = len(runs) >= 2 and all(run.is_finished for run in runs)
            return len(invoices) == 1 and len(review) == 1 and finished

        wait_for(done, timeout=150, what="invoices and review_queue rows, all runs finished")
    finally:
        stop(daemon)

    keys = instance.get_dynamic_partitions("documents")
    by_name = {key.rsplit("-", 1)[0]: key for key in keys}
    assert set(by_name) == {"invoice-a", "refused", "broken"}
    (row,) = read_table(data_dir, "invoices")
    assert row["document_key"] == by_name["invoice-a"]
    assert row["invoice_number"] == good.invoice_number
    assert row["total"] == good.total
    (review,) = read_table(data_dir, "review_queue")
    assert review["document_key"] == by_name["refused"] and review["error_kind"] == "refused"
    documents = {row["document_key"]: row for row in read_table(data_dir, "documents")}
    assert sorted(documents) == sorted(keys)  # the unreadable one included, once
    broken = documents[by_name["broken"]]
    assert (broken["status"], broken["error_kind"]) == ("failed", "CorruptPdf")
    assert broken["error_message"].startswith("CorruptPdf: broken.pdf: the PDF is truncated")
    extraction = instance.get_status_by_partition(EXTRACTION, keys, documents_partitions)
    source = instance.get_status_by_partition(SOURCE, keys, documents_partitions)
    assert extraction[by_name["invoice-a"]] == dg.AssetPartitionStatus.MATERIALIZED
    assert extraction[by_name["refused"]] == dg.AssetPartitionStatus.FAILED
    assert source[by_name["broken"]] == dg.AssetPartitionStatus.FAILED
    assert source[by_name["refused"]] == dg.AssetPartitionStatus.MATERIALIZED
