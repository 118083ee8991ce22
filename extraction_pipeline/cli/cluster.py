"""What `extraction-pipeline dev --storage s3` starts beside the UI and daemon: a loopback
S3-compatible server (SeaweedFS) holding the data dir, so a laptop runs the same storage
configuration as a deployment on several hosts.

The server keeps its data in DAGSTER_HOME/seaweedfs across restarts. Its credentials are fixed
development values for a server bound to 127.0.0.1, not secrets; `dev` prints the variables a
CLI command run beside it needs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from extraction_pipeline.instance.object_server import ObjectServer

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
