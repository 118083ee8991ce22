"""A real dagster-daemon on Postgres picks up a dropped PDF and materialises its partition."""

import sys
from pathlib import Path

import dagster as dg

from extraction_pipeline_tests.defs.helpers import drop
from extraction_pipeline_tests.e2e.processes import dagster_home, start, stop, wait_for
from extraction_pipeline_tests.pdfs import good_pdf, truncated_pdf

SOURCE = dg.AssetKey("source_document")
DAGSTER_DAEMON = str(Path(sys.executable).parent / "dagster-daemon")


def test_daemon_materialises_a_dropped_pdf(
    tmp_path: Path, pg_url: str, instance: dg.DagsterInstance
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {
        "DAGSTER_HOME": str(dagster_home(tmp_path)),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_DATA_DIR": str(tmp_path / "data"),
        "EXTRACTION_INBOX": str(inbox),
        "EXTRACTION_SENSOR_INTERVAL": "1",
        "EXTRACTION_SETTLE_SECONDS": "0.5",
    }
    daemon = start(
        [DAGSTER_DAEMON, "run", "-w", "workspace.yaml"],
        env,
        tmp_path / "daemon.log",
    )
    try:
        drop(inbox, "invoice A.pdf", good_pdf(1))
        drop(inbox, "broken.pdf", truncated_pdf())

        def settled() -> bool:
            keys = instance.get_dynamic_partitions("documents")
            if len(keys) < 2:
                return False
            runs = instance.get_runs()
            return bool(runs) and all(run.is_finished for run in runs)

        wait_for(settled, timeout=120, what="the daemon to register and run both documents")
    finally:
        stop(daemon)

    keys = instance.get_dynamic_partitions("documents")
    good = next(k for k in keys if k.startswith("invoice-a-"))
    bad = next(k for k in keys if k.startswith("broken-"))
    assert instance.get_materialized_partitions(SOURCE) == {good}
    from extraction_pipeline.defs.partitions import documents_partitions

    status = instance.get_status_by_partition(SOURCE, keys, documents_partitions)
    assert status[bad] == dg.AssetPartitionStatus.FAILED
