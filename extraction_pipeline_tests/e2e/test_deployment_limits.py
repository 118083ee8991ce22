"""The model's limits hold for the deployment, not per run: several runs under a real daemon
never have more calls in flight than EXTRACTION_MAX_CONCURRENCY, nor start more than
EXTRACTION_RPM requests in any minute."""

from pathlib import Path

import dagster as dg

from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.e2e.deployment import Deployment, wait_until_settled

DOCUMENTS = 18
CAP, RPM = 3, 12


def test_concurrency_cap_and_rpm_hold_across_concurrent_runs(
    tmp_path: Path, pg_url: str, instance: dg.DagsterInstance, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(latency_seconds=0.5)
    deployment = Deployment(
        tmp_path,
        pg_url,
        model_simulator,
        # Six files per tick: three runs, queued together and started side by side.
        extra_env={
            "EXTRACTION_MAX_CONCURRENCY": str(CAP),
            "EXTRACTION_RPM": str(RPM),
            "EXTRACTION_SENSOR_MAX_FILES": "6",
        },
    )
    deployment.start_daemon()
    try:
        deployment.drop_invoices(DOCUMENTS)
        wait_until_settled(instance, deployment, DOCUMENTS, timeout=280)
    finally:
        deployment.stop_daemon()
    runs = instance.get_runs(dg.RunsFilter(job_name="intake_job"))
    assert len(runs) >= 3
    report = model_simulator.requests()
    assert report["count"] == DOCUMENTS
    assert 1 <= report["peak_in_flight"] <= CAP
    starts = sorted(request["started_at"] for request in report["requests"])
    busiest = max(sum(1 for t in starts if s <= t < s + 60.0) for s in starts)
    assert busiest <= RPM, f"{busiest} requests started within one minute"
    assert starts[-1] - starts[0] >= 60.0  # the limit made the later runs wait
