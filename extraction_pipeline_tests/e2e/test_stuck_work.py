"""A run whose worker dies is marked failed, and the retry schedule picks its documents up."""

import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psutil

from extraction_pipeline.core.settings import Settings
from extraction_pipeline.defs.keys import EXTRACTION_KEY
from extraction_pipeline.defs.partitions import documents_partitions
from extraction_pipeline.samples import invoice_pdf, make_invoice
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.defs.helpers import definitions_for, drop
from extraction_pipeline_tests.e2e.processes import PROJECT_ROOT, start, stop, wait_for
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

DAGSTER_DAEMON = str(Path(sys.executable).parent / "dagster-daemon")


def run_worker(instance: dg.DagsterInstance, run_id: str) -> psutil.Process:
    """The run's process, as its own RUN_START event records it."""
    (start,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    assert start.dagster_event is not None and start.dagster_event.pid is not None
    return psutil.Process(start.dagster_event.pid)


def test_killed_run_worker_fails_the_run_and_the_retry_schedule_takes_the_document(
    tmp_path: Path,
    pg_url: str,
    instance: dg.DagsterInstance,
    model_simulator: SimulatorControl,
    pipeline_settings: Settings,
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Run retries off here, so that what picks the document up is the retry schedule.
    config = (PROJECT_ROOT / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(
        config.replace("  enabled: true\n  max_retries: 2", "  enabled: false\n  max_retries: 0")
    )
    env = {
        "DAGSTER_HOME": str(home),
        "EXTRACTION_PG_URL": pg_url,
        "EXTRACTION_DATA_DIR": str(pipeline_settings.data_dir),
        "EXTRACTION_INBOX": str(pipeline_settings.inbox),
        "EXTRACTION_SENSOR_INTERVAL": "1",
        "EXTRACTION_SETTLE_SECONDS": "0.5",
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
    }
    model_simulator.configure(latency_seconds=60)  # the model call outlives the worker
    daemon = start([DAGSTER_DAEMON, "run", "-w", "workspace.yaml"], env, tmp_path / "daemon.log")
    try:
        drop(pipeline_settings.inbox, "slow.pdf", invoice_pdf(make_invoice(1)))
        wait_for(
            lambda: (
                bool(instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])))
                and model_simulator.requests()["in_flight"] > 0
            ),
            timeout=120,
            what="a run calling the model",
        )
        (run,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        run_worker(instance, run.run_id).kill()
        wait_for(
            lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
            timeout=60,
            what="the run to be marked failed",
        )
    finally:
        stop(daemon)
        model_simulator.configure(latency_seconds=0)

    (key,) = instance.get_dynamic_partitions("documents")
    status = instance.get_status_by_partition(EXTRACTION_KEY, [key], documents_partitions)
    assert status[key] == dg.AssetPartitionStatus.FAILED
    defs = definitions_for(pipeline_settings)
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime.now(UTC),
        resources={"document_store": defs.resources["document_store"]},
    ) as context:
        result = defs.resolve_schedule_def("retry_failed")(context)
    requests = result if isinstance(result, list) else [result]
    assert [r.partition_key for r in requests] == [key]
