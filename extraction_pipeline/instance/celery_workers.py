"""Runs on Celery workers, through dagster-celery's run launcher (EXTRACTION_CELERY_BROKER).

Why the run launcher, not the executor: a run here is one step (the document multi-asset over a
range of partitions). With the executor, a run-worker process on the daemon's host would start
(~2.5 s of CPU), hand its one step to Celery and wait; with the launcher the whole run is one
Celery task, so the daemon's host only schedules and every host with a worker does the work.

What keeps a document from being lost when a worker dies mid-run:
- `task_acks_late`: the broker keeps the run's task until a worker has finished it, and hands it
  out again when the holder's connection drops (a killed worker, a lost host);
  `task_reject_on_worker_lost` does the same when only the pool's child process dies.
- The redelivered task finds its run already STARTED; with run monitoring on, Dagster ignores
  such a duplicate worker and the task ends. `check_run_worker_health` then reports a run whose
  task has ended while the run has not as FAILED (dagster-celery's own check would call it
  healthy and leave it STARTED for max_runtime_seconds), so monitoring fails the run and run
  retries relaunch it; documents already recorded are not asked again (the stored results).
- Task states live in a result backend every process can read: by default the deployment's
  Postgres (`db+postgresql://`), so no extra service is needed beyond the broker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_celery.config import DEFAULT_CONFIG
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG

from extraction_pipeline.core.settings import Settings
from extraction_pipeline.instance.dagster_compat import (
    CheckRunHealthResult,
    ConfigurableClassData,
    WorkerStatus,
)
from extraction_pipeline.instance.postgres import normalize_url

CELERY_CONFIG: dict[str, Any] = {
    **DEFAULT_CONFIG,
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,  # a worker holds only the run it executes
    "task_track_started": True,
    "broker_connection_retry_on_startup": True,
    "result_extended": True,
}


def celery_app_args(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Broker, result backend and settings shared by the launcher and the workers."""
    env = os.environ if env is None else env
    settings = Settings.from_env(env)
    if not settings.celery_broker:
        raise ValueError("EXTRACTION_CELERY_BROKER is not set")
    backend = settings.celery_backend
    if not backend:
        # With the psycopg2 driver named: SQLAlchemy 2.1 would pick psycopg 3 for postgresql://.
        backend = "db+" + normalize_url(env["EXTRACTION_PG_URL"])
    return {
        "broker": settings.celery_broker,
        "backend": backend,
        "include": [],
        "config_source": dict(CELERY_CONFIG),
    }


class CeleryWorkerRunLauncher(CeleryRunLauncher):
    """dagster-celery's run launcher, configured from the environment, with a health check that
    fails runs whose worker is gone (see the module docstring)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        queue = Settings.from_env(os.environ).celery_queue
        super().__init__(default_queue=queue, inst_data=inst_data, **celery_app_args())

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> CeleryWorkerRunLauncher:
        return cls(inst_data=inst_data)

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        task_id = run.tags.get(DAGSTER_CELERY_TASK_ID_TAG)
        if task_id is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "no Celery task yet")
        state = self.celery.AsyncResult(task_id).state
        if state in ("SUCCESS", "FAILURE", "REVOKED"):
            # The run is still STARTED (monitoring asks only then): its task ended without it.
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"the run's Celery task ended ({state}), the run did not"
            )
        if state == "STARTED":
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"Celery task {state}")
