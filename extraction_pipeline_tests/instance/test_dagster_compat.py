"""The private Dagster names in `dagster_compat` still exist and mean what the project relies on."""

import os
import time

import dagster as dg

from extraction_pipeline.instance.dagster_compat import (
    GRPC_INFO_TAG,
    CheckRunHealthResult,
    WorkerStatus,
)
from extraction_pipeline.instance.run_launcher import WorkerCheckingRunLauncher, worker_status


def test_private_names_the_project_relies_on_are_still_there() -> None:
    assert GRPC_INFO_TAG == ".dagster/grpc_info"
    assert {s.name for s in WorkerStatus} >= {"RUNNING", "NOT_FOUND", "FAILED", "SUCCESS"}
    assert CheckRunHealthResult(WorkerStatus.RUNNING).status is WorkerStatus.RUNNING
    assert issubclass(WorkerCheckingRunLauncher, dg.DefaultRunLauncher)


def test_worker_status_tells_a_live_worker_from_a_gone_or_reused_one() -> None:
    me = os.getpid()
    assert worker_status(me, run_started_at=time.time()).status is WorkerStatus.RUNNING
    # A process created long after the run started is not its worker: the id was reused.
    assert worker_status(me, run_started_at=0.0).status is WorkerStatus.NOT_FOUND
    assert worker_status(2**22 + 17, time.time()).status is WorkerStatus.NOT_FOUND
