"""The pipeline run the way `extraction-pipeline dev` runs it, without the UI: a code server and a
`dagster-daemon` that talks to it (`start_deployment`), on a fresh DAGSTER_HOME (the project's
dagster.yaml) and a fresh Postgres database, watching a drop folder, calling the model
simulator; plus what the benchmarks read back from the instance and tables.

`dg dev` starts the code server once and hands the UI and the daemon a workspace that points at
it; a daemon given the project's workspace.yaml instead starts its own code server and replaces
it every 60 s (Dagster's daemon refreshes the servers it manages), ~2 s of CPU each time."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import yaml
from common import API_KEY, BIN, free_port, start_process, wait_for
from dagster._core.scheduler.instigation import InstigatorType
from meter import ProcessTreeMeter

from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
from extraction_pipeline.core.settings import Settings

# The product's defaults, so that a benchmark without flags measures what users run.
PRODUCT = Settings.from_env({})
EXTRACTION = dg.AssetKey("extraction")
DOCUMENTS_TABLE = dg.AssetKey("documents")
DONE_STATUSES = ("extracted", "needs_review")


@dataclass(frozen=True)
class Knobs:
    """The environment knobs the pipeline reads (README, Configuration)."""

    max_concurrency: int = 8
    sensor_interval: int = PRODUCT.sensor_interval_seconds
    sensor_max_files: int = PRODUCT.sensor_max_files
    settle_seconds: float = PRODUCT.settle_seconds
    tables_interval: int = PRODUCT.tables_interval_seconds

    def env(self) -> dict[str, str]:
        return {
            "EXTRACTION_MAX_CONCURRENCY": str(self.max_concurrency),
            "EXTRACTION_SENSOR_INTERVAL": str(self.sensor_interval),
            "EXTRACTION_SENSOR_MAX_FILES": str(self.sensor_max_files),
            "EXTRACTION_SETTLE_SECONDS": str(self.settle_seconds),
            "EXTRACTION_TABLES_INTERVAL": str(self.tables_interval),
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunningPipeline:
    """A daemon (and the code server and run workers it starts) on its own home and data dir."""

    def __init__(
        self,
        workdir: Path,
        pg_url: str,
        model_base_url: str,
        knobs: Knobs,
        stack: contextlib.ExitStack,
    ) -> None:
        self.workdir = workdir
        self.home = workdir / "dagster_home"
        self.data_dir = workdir / "data"
        self.inbox = workdir / "inbox"
        for folder in (self.home, self.data_dir, self.inbox):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(INSTANCE_TEMPLATE, self.home / "dagster.yaml")
        self.knobs = knobs
        self.env = {
            "DAGSTER_HOME": str(self.home),
            "EXTRACTION_PG_URL": pg_url,
            "EXTRACTION_DATA_DIR": str(self.data_dir),
            "EXTRACTION_INBOX": str(self.inbox),
            "OPENAI_BASE_URL": model_base_url,
            "OPENAI_API_KEY": API_KEY,
            **knobs.env(),
        }
        os.environ["EXTRACTION_PG_URL"] = pg_url  # the instance below reads dagster.yaml too
        self.instance = stack.enter_context(dg.DagsterInstance.from_config(str(self.home)))
        self.code_server, self.daemon = start_deployment(self.env, workdir, stack)
        self.meter = stack.enter_context(deployment_meter(self.code_server, self.daemon))
        self.started = time.monotonic()

    def wait_ready(self, timeout: float = 180) -> float:
        """Until the inbox sensor and the tables automation have each ticked; seconds taken."""

        def ticked() -> bool:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"dagster-daemon exited; see {self.workdir / 'daemon.log'}")
            return {"inbox_sensor", "tables_automation"} <= sensors_that_ticked(self.instance)

        wait_for(ticked, timeout, "the daemon's first sensor ticks", interval=0.5)
        return time.monotonic() - self.started

    def done_rows(self) -> int:
        """Documents in documents.parquet with an extraction (extracted or needs review)."""
        table = read_table(self.data_dir, "documents", ["status"])
        if table is None:
            return 0
        return sum(1 for status in table.column("status").to_pylist() if status in DONE_STATUSES)

    def table_keys(self, name: str) -> list[str]:
        """The document keys of a table's rows (one per row)."""
        table = read_table(self.data_dir, name, ["document_key"])
        return [] if table is None else table.column("document_key").to_pylist()

    def materialized(self) -> int:
        return len(self.instance.get_materialized_partitions(EXTRACTION))

    def wait_done(self, n: int, started: float, timeout: float) -> tuple[float, float]:
        """Seconds after `started` (a time.monotonic()) until all `n` documents were
        materialised, and until documents.parquet held them all."""
        extracted_s = tables_s = None
        while extracted_s is None or tables_s is None:
            if time.monotonic() - started > timeout:
                raise TimeoutError(
                    f"after {timeout:.0f}s: {self.materialized()} of {n} materialised, "
                    f"{self.done_rows()} rows in documents.parquet (see {self.workdir})"
                )
            if self.daemon.poll() is not None:
                raise RuntimeError(f"dagster-daemon exited (see {self.workdir}/daemon.log)")
            if extracted_s is None and self.materialized() >= n:
                extracted_s = time.monotonic() - started
            if tables_s is None and self.done_rows() >= n:
                tables_s = time.monotonic() - started
            time.sleep(0.5)
        return extracted_s, tables_s

    def unfinished_runs(self) -> int:
        statuses = [
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
        ]
        return len(self.instance.get_run_ids(dg.RunsFilter(statuses=statuses)))

    def timeline(self, since: float) -> dict[str, float | int | None]:
        """Seconds after `since` (a time.time()) of the first run, the last extraction and the
        last tables refresh, from the instance's own records."""
        records = self.instance.get_run_records(dg.RunsFilter(job_name="intake_job"))
        created = [r.create_timestamp.timestamp() for r in records]
        started = [r.start_time for r in records if r.start_time]
        ended = [r.end_time for r in records if r.end_time]
        # Newest first: the last extraction, and every one for the per-window counts.
        extractions = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=EXTRACTION), limit=10_000
        ).records
        tables = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=DOCUMENTS_TABLE), limit=1
        ).records

        def after(moment: float | None) -> float | None:
            return None if moment is None else round(moment - since, 2)

        per_window: dict[int, int] = {}
        for record in extractions:
            window = int((record.timestamp - since) // RATE_WINDOW_SECONDS)
            per_window[window] = per_window.get(window, 0) + 1
        all_runs = len(self.instance.get_run_ids())
        runs = sorted(
            (after(r.create_timestamp.timestamp()), after(r.start_time), after(r.end_time))
            for r in records
        )
        first = min(records, key=lambda r: r.create_timestamp, default=None)
        return {
            "first_run_stages_s": self.run_stages(first.dagster_run.run_id, since) if first else {},
            "intake_runs_created_started_ended_s": runs,
            "inbox_sensor_ticks_s": self.sensor_ticks("inbox_sensor", since),
            "intake_runs": len(records),
            "other_runs (tables, ...)": all_runs - len(records),
            "first_run_created_s": after(min(created, default=None)),
            "first_run_started_s": after(min(started, default=None)),
            "last_run_ended_s": after(max(ended, default=None)),
            "last_extraction_s": after(extractions[0].timestamp if extractions else None),
            "last_tables_refresh_s": after(tables[0].timestamp if tables else None),
            f"extractions_per_{RATE_WINDOW_SECONDS}s": [
                per_window.get(w, 0) for w in range(max(per_window, default=-1) + 1)
            ],
        }

    def run_stages(self, run_id: str, since: float) -> dict[str, float]:
        """Seconds after `since` of the first event of each kind in the run's start-up."""
        stages: dict[str, float] = {}
        wanted = {
            dg.DagsterEventType.RUN_ENQUEUED: "enqueued",
            dg.DagsterEventType.RUN_DEQUEUED: "dequeued",
            dg.DagsterEventType.RUN_STARTING: "launching",
            dg.DagsterEventType.RUN_START: "started",
            dg.DagsterEventType.STEP_START: "step started",
            dg.DagsterEventType.ASSET_MATERIALIZATION: "first materialisation",
        }
        for entry in self.instance.all_logs(run_id, of_type=set(wanted)):
            name = wanted[entry.dagster_event.event_type]  # type: ignore[union-attr]
            stages.setdefault(name, round(entry.timestamp - since, 2))
        return stages

    def sensor_ticks(self, name: str, since: float) -> list[tuple[float, float | None, int]]:
        """(start, end, runs requested) of the sensor's ticks after `since`, in seconds."""
        ticks = []
        for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name != name:
                continue
            for tick in self.instance.get_ticks(state.instigator_origin_id, state.selector_id):
                end = tick.end_timestamp
                if end is not None and end < since:
                    continue
                ticks.append(
                    (
                        round(tick.timestamp - since, 2),
                        None if end is None else round(end - since, 2),
                        len(tick.run_ids),
                    )
                )
        return sorted(ticks)


def start_deployment(
    env: dict[str, str], workdir: Path, stack: contextlib.ExitStack
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A code server for the project's definitions and a daemon whose workspace points at it, as
    `dg dev` starts them (logs in `workdir`); stopped when `stack` closes."""
    code_server, workspace = start_code_server(env, workdir, stack)
    daemon = start_process(
        [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
        env,
        workdir / "daemon.log",
        stack,
    )
    return code_server, daemon


def start_code_server(
    env: dict[str, str], workdir: Path, stack: contextlib.ExitStack
) -> tuple[subprocess.Popen[bytes], Path]:
    """A code server for the project's definitions, serving; and a workspace.yaml pointing at
    it (for a daemon or webserver)."""
    port = free_port()
    code_server = start_process(
        [
            str(BIN / "dagster"), "api", "grpc",
            "-m", "extraction_pipeline.definitions",
            "--location-name", "extraction_pipeline",
            "-h", "127.0.0.1", "-p", str(port),
        ],
        env,
        workdir / "code-server.log",
        stack,
    )  # fmt: skip
    workspace = workdir / "workspace.yaml"
    location = {"host": "127.0.0.1", "port": port, "location_name": "extraction_pipeline"}
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": location}]}))
    wait_for(lambda: _serves(port, code_server), 120, "the code server")
    return code_server, workspace


def deployment_meter(
    code_server: subprocess.Popen[bytes], daemon: subprocess.Popen[bytes]
) -> ProcessTreeMeter:
    """CPU of the daemon, the code server and the runs it starts, by role."""
    return ProcessTreeMeter(
        [daemon.pid, code_server.pid],
        root_role="daemon",
        root_roles={code_server.pid: "code server"},
    )


def _serves(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError("the code server exited; see code-server.log")
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


# Extraction materialisations are counted in windows of this many seconds after the drop.
RATE_WINDOW_SECONDS = 5


def sensors_that_ticked(instance: dg.DagsterInstance) -> set[str]:
    names = set()
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1):
            names.add(state.instigator_name)
    return names


def read_table(data_dir: Path, name: str, columns: list[str] | None = None) -> Any:
    path = data_dir / "tables" / f"{name}.parquet"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return pq.read_table(io.BytesIO(data), columns=columns)
