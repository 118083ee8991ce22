"""What `extraction-pipeline dev --storage s3 --workers N` starts beside the UI and daemon, so a
laptop runs the configuration of a deployment on several hosts:

- `--storage s3`: a loopback S3-compatible server (SeaweedFS) holding the data dir. It keeps its
  data in DAGSTER_HOME/seaweedfs across restarts; its credentials are fixed development values
  for a server bound to 127.0.0.1, not secrets; `dev` prints the variables a CLI command run
  beside it needs.
- `--workers N`: N Celery worker processes (one run each at a time) and the Celery run launcher
  (instance.celery_workers). The broker is EXTRACTION_CELERY_BROKER, else a RabbitMQ or Redis
  answering on its default port on this machine; no broker is started here (neither ships on
  PyPI), and without one `dev` says how to get one.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from extraction_pipeline.instance.object_server import ObjectServer

LOCAL_BROKERS = (
    ("pyamqp://guest:guest@127.0.0.1:5672//", 5672),
    ("redis://127.0.0.1:6379/0", 6379),
)
WORKER_APP = "extraction_pipeline.instance.celery_app"

DEV_BUCKET = "extraction"
DEV_PREFIX = "data"
DEV_ACCESS_KEY = "extraction-dev"
DEV_SECRET_KEY = "extraction-dev-local-only"


@contextlib.contextmanager
def dev_object_storage(dagster_home: Path, env: dict[str, str]) -> Iterator[ObjectServer]:
    """Start the server and point `env` (EXTRACTION_DATA_DIR and the AWS variables) at it."""
    folder = dagster_home / "seaweedfs"
    # weed reloads the options of its last start from here, ports included: start afresh.
    (folder / "mini.options").unlink(missing_ok=True)
    server = ObjectServer(folder, DEV_BUCKET, DEV_ACCESS_KEY, DEV_SECRET_KEY).start()
    try:
        env.update(server.client_env(), EXTRACTION_DATA_DIR=server.url(DEV_PREFIX))
        yield server
    finally:
        server.stop()


def client_exports(server: ObjectServer) -> list[str]:
    """Shell lines that let a CLI command in another terminal use the same object storage."""
    variables = {**server.client_env(), "EXTRACTION_DATA_DIR": server.url(DEV_PREFIX)}
    return [f"export {name}={value}" for name, value in variables.items()]


class NoBroker(Exception):
    """`--workers` without a broker to use."""


def local_broker() -> str | None:
    """The URL of a RabbitMQ, else a Redis, answering on its default port on this machine."""
    for url, port in LOCAL_BROKERS:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return url
    return None


def choose_broker(env: dict[str, str]) -> str:
    """EXTRACTION_CELERY_BROKER, else a local RabbitMQ or Redis on its default port."""
    broker = env.get("EXTRACTION_CELERY_BROKER") or local_broker()
    if broker:
        return broker
    raise NoBroker(
        "--workers needs a Celery broker: set EXTRACTION_CELERY_BROKER, or run RabbitMQ "
        "(e.g. `docker run -d -p 5672:5672 rabbitmq`) or Redis on this machine"
    )


def start_workers(
    count: int, env: dict[str, str], cwd: Path, queue: str
) -> list[subprocess.Popen[bytes]]:
    """`count` Celery workers of the run queue, each running one run at a time."""
    return [
        subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", WORKER_APP, "worker",
                "-Q", queue, "-n", f"worker{number}@%h", "--concurrency", "1",
                "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
            ],
            cwd=cwd,
            env=env,
            start_new_session=True,  # stopped as a group, with its pool
        )
        for number in range(1, count + 1)
    ]  # fmt: skip
