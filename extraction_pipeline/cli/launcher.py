"""`extraction-pipeline dev`: the database, then the Dagster webserver and daemon, as one unit.

Everything started here is stopped here: Ctrl-C (or SIGTERM) stops `dg dev` and every process
under it, then the embedded Postgres, and leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from extraction_pipeline.core.settings import Settings
from extraction_pipeline.instance.postgres import embedded_postgres, mask_url, normalize_url

if TYPE_CHECKING:
    from dagster import DagsterInstance

MANAGED_MARKER = "# managed by extraction-pipeline"
# Not a secret: the simulator accepts any key, the SDK just insists on having one.
SIMULATOR_API_KEY = "sk-simulator-no-real-key"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
STOP_MARGIN_SECONDS = 25.0
# Where `dev` says which simulator it serves (under the simulator's state folder).
SIMULATOR_ENDPOINT_FILE = "endpoint.json"


# The instance configuration every DAGSTER_HOME of this project gets (see its header).
INSTANCE_TEMPLATE = Path(__file__).resolve().parent.parent / "instance" / "dagster.yaml"


class ProjectNotFound(RuntimeError):
    """No workspace.yaml found: the command must run inside the project."""


@dataclass(frozen=True)
class Environment:
    """The resolved deployment: what every process started by the CLI is given."""

    project_root: Path
    dagster_home: Path
    settings: Settings

    def child_env(self, database_url: str, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env.update(
            DAGSTER_HOME=str(self.dagster_home),
            EXTRACTION_PG_URL=database_url,
            EXTRACTION_DATA_DIR=str(self.settings.data_dir),
            EXTRACTION_INBOX=str(self.settings.inbox),
        )
        return env


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder (from the cwd up) holding workspace.yaml; else the checkout this
    package was installed from in editable mode."""
    candidates = [start or Path.cwd(), *(start or Path.cwd()).parents]
    candidates.append(Path(__file__).resolve().parents[2])
    for folder in candidates:
        if (folder / "workspace.yaml").is_file():
            return folder
    raise ProjectNotFound("no workspace.yaml here or above: run this inside the project folder")


def resolve_environment(env: Mapping[str, str] | None = None) -> Environment:
    env = os.environ if env is None else env
    root = find_project_root()
    dagster_home = Path(env.get("DAGSTER_HOME") or ".dagster_home").absolute()
    return Environment(root, dagster_home, Settings.from_env(env))


def prepare_dagster_home(environment: Environment) -> None:
    """Create DAGSTER_HOME and (re)write its dagster.yaml from the package's, unless the user has
    taken the copy over by deleting the marker line."""
    from extraction_pipeline.instance.instance_yaml import instance_yaml

    environment.dagster_home.mkdir(parents=True, exist_ok=True)
    source = instance_yaml(INSTANCE_TEMPLATE.read_text(), environment.settings)
    target = environment.dagster_home / "dagster.yaml"
    if not target.exists() or MANAGED_MARKER in target.read_text():
        target.write_text(source)


@contextlib.contextmanager
def database(environment: Environment, env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """Yield (url, description): the configured server, or the embedded one started for us."""
    configured = env.get("EXTRACTION_PG_URL")
    if configured:
        yield normalize_url(configured), "EXTRACTION_PG_URL"
        return
    pgdata = environment.dagster_home / "pgdata"
    with embedded_postgres(pgdata) as url:
        yield url, f"embedded PostgreSQL, data in {pgdata}"


@contextlib.contextmanager
def local_instance(env: dict[str, str]) -> Iterator[tuple[DagsterInstance, Environment]]:
    """The Dagster instance of this deployment, for CLI commands: joins the embedded database
    of a running `dev` (or starts it for the command's duration)."""
    from dagster import DagsterInstance

    environment = resolve_environment(env)
    prepare_dagster_home(environment)
    with database(environment, env) as (url, _):
        env.update(DAGSTER_HOME=str(environment.dagster_home), EXTRACTION_PG_URL=url)
        os.environ.update(DAGSTER_HOME=env["DAGSTER_HOME"], EXTRACTION_PG_URL=url)
        instance = DagsterInstance.get()
        try:
            yield instance, environment
        finally:
            instance.dispose()


def model_endpoint(env: Mapping[str, str]) -> str:
    return env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL


@contextlib.contextmanager
def model_simulator_if_no_key(
    env: dict[str, str], publish: bool = False
) -> Iterator[subprocess.Popen[bytes] | None]:
    """Without OPENAI_API_KEY, point the pipeline (in `env`) at the model simulator: the one a
    running `dev` serves (its files and batches are there), else one started here.

    Its files and batches are kept in `_simulator_state_dir`, so a batch still open when `dev`
    restarts is there (and has moved on) when it comes back. `publish` (for `dev`) makes the
    endpoint known to the CLI commands run beside it."""
    if env.get("OPENAI_API_KEY"):
        yield None
        return
    running = None if publish else running_simulator(env)
    if running is not None:
        env.update(OPENAI_BASE_URL=running, OPENAI_API_KEY=SIMULATOR_API_KEY)
        yield None
        return
    port = _free_port()
    latency = env.get("EXTRACTION_SIMULATOR_LATENCY", "0.5")
    command = [
        sys.executable, "-m", "extraction_pipeline.cli.main", "simulate-model",
        "--port", str(port), "--latency", latency,
        "--state-dir", str(_simulator_state_dir(env)),
    ]  # fmt: skip
    process = subprocess.Popen(command, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY=SIMULATOR_API_KEY)
    endpoint = _simulator_state_dir(env) / SIMULATOR_ENDPOINT_FILE
    try:
        _wait_for_http(f"{base_url}/models", process)
        if publish:
            endpoint.write_text(json.dumps({"base_url": base_url}))
        yield process
    finally:
        if publish:
            endpoint.unlink(missing_ok=True)
        _stop_process_group(process)


def running_simulator(env: Mapping[str, str]) -> str | None:
    """The base URL of the simulator a running `dev` serves, if one answers."""
    try:
        published = json.loads((_simulator_state_dir(env) / SIMULATOR_ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    base_url = str(published.get("base_url") or "")
    return base_url if base_url and _answers(f"{base_url}/models") else None


def model_endpoint_env(environment: Environment, env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the model endpoint a CLI command should use: the configured one, else the
    simulator of a running `dev`."""
    resolved = dict(env)
    if not resolved.get("OPENAI_API_KEY"):
        running = running_simulator({**resolved, "DAGSTER_HOME": str(environment.dagster_home)})
        if running is not None:
            resolved.update(OPENAI_BASE_URL=running, OPENAI_API_KEY=SIMULATOR_API_KEY)
    return resolved


def _simulator_state_dir(env: Mapping[str, str]) -> Path:
    """`<DAGSTER_HOME>/simulator`: beside the instance whose runs wait on its batches."""
    return resolve_environment(env).dagster_home / "simulator"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if _answers(url):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the model simulator did not answer at {url}")


def run_dg(args: list[str], env: Mapping[str, str] | None = None) -> int:
    """Dagster's `dg ARGS` on this deployment's instance: DAGSTER_HOME prepared, the database
    joined (the embedded one of a running `dev`, or started for the command's duration)."""
    env = dict(os.environ if env is None else env)
    environment = resolve_environment(env)
    prepare_dagster_home(environment)
    with database(environment, env) as (url, _):
        command = [sys.executable, "-m", "dagster_dg_cli.cli", *args]
        return subprocess.call(
            command, cwd=environment.project_root, env=environment.child_env(url, env)
        )


def run_dev(
    host: str,
    port: int,
    env: Mapping[str, str] | None = None,
    storage: str = "local",
    workers: int = 0,
) -> int:
    """Run the whole local deployment until interrupted; return the exit code. `storage`
    "s3" keeps the data dir in a loopback S3-compatible server started here; `workers` > 0 runs
    the runs on that many Celery workers (cli.cluster)."""
    from extraction_pipeline.cli import cluster

    env = dict(os.environ if env is None else env)
    if workers:
        env["EXTRACTION_CELERY_BROKER"] = cluster.choose_broker(env)
        env.setdefault("EXTRACTION_RUN_SLOTS", str(workers))
    environment = resolve_environment(env)
    with contextlib.ExitStack() as stack:
        exports: list[str] = []
        if storage == "s3":
            server = stack.enter_context(cluster.dev_object_storage(environment.dagster_home, env))
            environment = resolve_environment(env)
            exports = ["  CLI commands in another terminal need:", *cluster.client_exports(server)]
        if workers:
            exports.append(
                f"  Celery workers {workers} (broker {mask_url(env['EXTRACTION_CELERY_BROKER'])})"
            )
        prepare_dagster_home(environment)
        return _run_dev(environment, env, host, port, exports, workers)


def _run_dev(
    environment: Environment,
    env: dict[str, str],
    host: str,
    port: int,
    exports: list[str],
    workers: int,
) -> int:
    from extraction_pipeline.cli import cluster

    if environment.settings.local_inbox is not None:
        environment.settings.local_inbox.mkdir(parents=True, exist_ok=True)
    if environment.settings.local_data_dir is not None:
        environment.settings.local_data_dir.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    _install_stop_handlers(stop)
    with (
        database(environment, env) as (url, where),
        model_simulator_if_no_key(env, publish=True) as simulator,
    ):
        ui = f"http://{host}:{port}"
        _say(
            "extraction-pipeline dev",
            f"  Dagster UI     {ui}",
            f"  database       {mask_url(url)}  ({where})",
            f"  DAGSTER_HOME   {environment.dagster_home}",
            f"  drop folder    {environment.settings.inbox}",
            f"  data dir       {environment.settings.data_dir}",
            f"  model endpoint {model_endpoint(env)}",
            f"  model          {environment.settings.extraction.model} "
            f"({environment.settings.extraction.api_mode} API, schema "
            f"{environment.settings.extraction.schema_ref})",
            *exports,
            "  Ctrl-C stops everything started here.",
        )
        if simulator is not None:
            _say(
                "",
                "  !! OPENAI_API_KEY is not set: extraction uses the MODEL SIMULATOR at",
                f"  !! {model_endpoint(env)} (deterministic answers read from the PDF text,",
                "  !! no real model, costs are what the price table says it would cost).",
                "  !! Set OPENAI_API_KEY (and optionally OPENAI_BASE_URL) to use a real model.",
                "",
            )
        # `dg dev` is Dagster's current command (`dagster dev` warns it is superseded).
        command = [
            sys.executable, "-m", "dagster_dg_cli.cli", "dev",
            "-w", str(environment.project_root / "workspace.yaml"),
            "-h", host, "-p", str(port),
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            cwd=environment.project_root,
            env=environment.child_env(url, env),
            start_new_session=True,  # its own process group: we stop all of it, and only it
        )
        worker_processes = cluster.start_workers(
            workers,
            environment.child_env(url, env),
            environment.project_root,
            environment.settings.celery_queue,
        )
        threading.Thread(target=_announce_when_ready, args=(ui, stop), daemon=True).start()
        try:
            while process.poll() is None and not stop.is_set():
                stop.wait(0.5)
        finally:
            # Room for the runs' grace period, their last events and Dagster's own shutdown.
            grace = environment.settings.extraction.stop_grace_seconds + STOP_MARGIN_SECONDS
            code = _stop_process_group(process, grace)
            for worker in worker_processes:
                _stop_process_group(worker, grace)
    _say("extraction-pipeline dev: stopped")
    return 0 if stop.is_set() else code


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _stop_process_group(process: subprocess.Popen[bytes], grace_seconds: float = 20.0) -> int:
    """SIGINT to the whole process group, as Ctrl-C in a terminal would do: `dg dev` stops
    its webserver, daemon and code servers, and each run worker lets the model calls it has in
    flight finish and records them (EXTRACTION_STOP_GRACE_SECONDS), then fails its run as
    interrupted, which run retries take up on the next start. Whatever is still there after
    `grace_seconds` gets SIGTERM, then SIGKILL."""
    group = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGINT)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and (process.poll() is None or _group_alive(group)):
        time.sleep(0.2)
    code = process.poll()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(group):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        time.sleep(2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return -signal.SIGKILL if code is None else code


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _announce_when_ready(ui: str, stop: threading.Event) -> None:
    while not stop.is_set():
        if _answers(f"{ui}/server_info"):
            _say(f"extraction-pipeline dev: the Dagster UI is ready at {ui}")
            return
        stop.wait(1.0)


def _say(*lines: str) -> None:
    print("\n".join(lines), flush=True)
