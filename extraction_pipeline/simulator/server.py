"""Serving the simulator: blocking (`run_simulator`, the CLI), or in a background thread for tests.

`SimulatorServer` binds a free loopback port before starting uvicorn, so there is no race between
choosing and using the port; `SimulatorControl` drives the `/_sim` endpoints over HTTP, the same
way for an in-process server and one in another process.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import httpx2
import uvicorn

from extraction_pipeline.simulator.app import create_app
from extraction_pipeline.simulator.config import BATCH_WINDOW_SECONDS, SimulatorConfig
from extraction_pipeline.simulator.faults import (
    FAULT_MIXES,
    FaultRule,
    InvalidFaultSpec,
    describe_mix,
    parse_fault_spec,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
STARTUP_TIMEOUT_SECONDS = 10.0


def _uvicorn_config(config: SimulatorConfig, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


def run_simulator(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, config: SimulatorConfig | None = None
) -> None:
    """Serve the simulator until interrupted (Ctrl-C)."""
    uvicorn.Server(_uvicorn_config(config or SimulatorConfig(), host, port)).run()


class SimulatorServer:
    """The simulator on a free loopback port in a daemon thread. `with SimulatorServer() as s:`."""

    def __init__(self, config: SimulatorConfig | None = None, host: str = DEFAULT_HOST) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(_uvicorn_config(config or SimulatorConfig(), host, self.port))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """The OpenAI base URL: `http://127.0.0.1:PORT/v1`."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        """Start serving and wait until it accepts requests; returns `base_url`."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the model simulator did not start")
            time.sleep(0.01)
        return self.base_url

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()

    def control(self) -> SimulatorControl:
        return SimulatorControl(self.base_url)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class SimulatorControl:
    """Client of a running simulator's `/_sim` endpoints."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._root = base_url.removesuffix("/").removesuffix("/v1")

    def _call(
        self, method: str, path: str, body: object = None, params: dict[str, str] | None = None
    ) -> Any:
        response = httpx2.request(
            method, f"{self._root}{path}", json=body, params=params, timeout=30
        )
        response.raise_for_status()
        return response.json()

    def set_faults(self, *rules: FaultRule | str) -> None:
        """Replace the fault rules (`FaultRule`s or CLI-style specs such as `"500:count=1"`)."""
        parsed = [parse_fault_spec(r) if isinstance(r, str) else r for r in rules]
        self._call("POST", "/_sim/faults", {"faults": [r.model_dump() for r in parsed]})

    def faults(self) -> list[FaultRule]:
        return [FaultRule.model_validate(r) for r in self._call("GET", "/_sim/faults")["faults"]]

    def configure(self, **settings: float | int | str) -> None:
        """Change live settings: latency_seconds, jitter_seconds, batch_phase_seconds,
        batch_expire_seconds (both for batches created afterwards), seed, fault_mix (e.g.
        "standard": replaces the fault rules with that mix), ..."""
        self._call("POST", "/_sim/settings", settings)

    def requests(self, with_text: bool = False) -> dict[str, Any]:
        """The request log: count, in_flight, peak_in_flight, by_endpoint, by_fault, requests
        (each with `document_text` when `with_text`), documents (per document: requests,
        billed, usable, abandoned answers, faults) and paid_twice (documents with more than one
        usable answer)."""
        params = {"text": "1"} if with_text else None
        return dict(self._call("GET", "/_sim/requests", params=params))

    def reset(self) -> None:
        self._call("POST", "/_sim/reset")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extraction-pipeline simulate-model",
        description="Serve a deterministic OpenAI-compatible model simulator on loopback.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per model answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra random seconds, 0..J")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="KIND[:key=value]..., e.g. 429:count=2:retry_after=1 or refuse:match=INV-0003",
    )
    parser.add_argument(
        "--fault-mix",
        choices=sorted(FAULT_MIXES),
        default=None,
        help="a named mix of faults, each request drawn independently; standard: "
        + describe_mix("standard").replace("%", "%%"),  # argparse formats help with %
    )
    parser.add_argument("--batch-phase-seconds", type=float, default=2.0)
    parser.add_argument(
        "--batch-expire-seconds",
        type=float,
        default=BATCH_WINDOW_SECONDS,
        help="a batch not completed this long after creation expires (default: 24 h)",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="keep uploaded files and batches in DIR, so a restart still has them",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds fault draws and jitter")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI `simulate-model`: parse flags, print where it serves, serve until interrupted."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = [parse_fault_spec(spec) for spec in args.fault]
    except InvalidFaultSpec as error:
        parser.error(str(error))
    config = SimulatorConfig(
        latency_seconds=args.latency,
        jitter_seconds=args.jitter,
        faults=faults,
        fault_mix=args.fault_mix,
        batch_phase_seconds=args.batch_phase_seconds,
        batch_expire_seconds=args.batch_expire_seconds,
        state_dir=args.state_dir,
        seed=args.seed,
    )
    mix = f", fault mix {args.fault_mix}: {describe_mix(args.fault_mix)}" if args.fault_mix else ""
    kept = f", files and batches kept in {args.state_dir}" if args.state_dir else ""
    print(
        f"model simulator: OpenAI-compatible API at http://{args.host}:{args.port}/v1 "
        f"(latency {args.latency}s, {len(faults)} fault rule(s){mix}{kept}); Ctrl-C stops it",
        flush=True,
    )
    # Ctrl-C (or the dev launcher stopping it) is the normal way out.
    with contextlib.suppress(KeyboardInterrupt):
        run_simulator(args.host, args.port, config)
    return 0
