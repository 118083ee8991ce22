"""A run launcher that can tell run monitoring whether a run's worker process is still alive.

Dagster's `DefaultRunLauncher` starts each run as a process of the code server but cannot check
on it afterwards (`supports_check_run_worker_health` is False). When the code server sees its
child die it marks the run failed; but when the code server or the daemon dies with it (a killed
`dev`, a crashed machine), nobody does, and the run stays STARTED until run monitoring's
`max_runtime_seconds` (hours). Its documents would sit in a run that will never finish.

`WorkerCheckingRunLauncher` launches exactly as the default one does and answers run
monitoring's health check from the run worker's process id (recorded in the run's RUN_START
event) when the worker runs on this machine: a worker that is gone, a zombie, or a newer process
that reused its id is reported NOT_FOUND, so monitoring fails the run within one
`poll_interval_seconds` and run retries relaunch it. Workers on other hosts are reported RUNNING:
this launcher cannot see them, and `max_runtime_seconds` stays their bound. Runs that say which
host ran them (`WORKER_HOST_TAG`, set by `ingest`) are checked on that host.
"""

from __future__ import annotations

import json
import socket

import dagster as dg
import psutil

from extraction_pipeline.instance.dagster_compat import (
    GRPC_INFO_TAG,
    CheckRunHealthResult,
    WorkerStatus,
)
from extraction_pipeline.instance.names import WORKER_HOST_TAG

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", ""})
# Runs executed in a process of their own choosing (`extraction-pipeline ingest` runs in the CLI's
# process) name the host they run on, so a killed CLI's run is found dead too.
# A process created this long after the run started cannot be its worker (the id was reused).
PID_REUSE_SLACK_SECONDS = 5.0


class WorkerCheckingRunLauncher(dg.DefaultRunLauncher):
    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if not _launched_on_this_host(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "worker on another host")
        started = self._instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        if not started or started[-1].dagster_event is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no RUN_START event yet")
        pid = started[-1].dagster_event.pid
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "RUN_START carries no pid")
        return worker_status(pid, started[-1].timestamp)


def worker_status(pid: int, run_started_at: float) -> CheckRunHealthResult:
    """Whether process `pid`, started no later than the run, is alive."""
    try:
        process = psutil.Process(pid)
        alive = process.status() != psutil.STATUS_ZOMBIE
        reused = process.create_time() > run_started_at + PID_REUSE_SLACK_SECONDS
    except psutil.NoSuchProcess:
        return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"run worker (pid {pid}) is gone")
    if not alive:
        return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"run worker (pid {pid}) has exited")
    if reused:
        return CheckRunHealthResult(
            WorkerStatus.NOT_FOUND, f"run worker (pid {pid}) is gone; the id was reused"
        )
    return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker (pid {pid}) is alive")


def _launched_on_this_host(run: dg.DagsterRun) -> bool:
    if run.tags.get(WORKER_HOST_TAG) == socket.gethostname():
        return True
    raw = run.tags.get(GRPC_INFO_TAG)
    if raw is None:
        return False
    info = json.loads(raw)
    return "socket" in info or str(info.get("host") or "") in LOOPBACK_HOSTS
