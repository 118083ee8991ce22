"""The Dagster UI's asset and partition pages on a deployment's instance: how long each takes to
load in a real browser (Debian's Chromium driven by playwright, as the browser tests do).

`measure_pages(env, workdir, partition_key, visits)` starts a code server and
`dagster-webserver` on the instance of `env` (as `dev` starts them; no daemon, so nothing else
runs), opens one page to let the webserver load its workspace, then opens each page of PAGES
`visits` times (once if it timed out), each time in a new browser profile (the UI keeps some
answers in the browser's IndexedDB; none are reused here).
A page's load time runs from navigation to the end of the last request it made before it was
loaded: the GraphQL queries that carry what it shows (PAGES) have answered and no request has
been in flight for a second, so it covers the queries the UI sends after the first answers.
Per page it reports both visits and the slowest GraphQL operation; also the webserver's peak
RSS and CPU.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from common import BIN, free_port, start_process, wait_for
from daemon import start_code_server
from meter import ProcessTreeMeter

# Each page, and the GraphQL queries that carry what it shows: it has loaded when they have
# answered and no request has been in flight for QUIET_SECONDS (the UI asks some queries only
# after others answered).
PAGES = {
    "asset: extraction": (
        "/assets/extraction",
        {"AssetViewDefinitionQuery", "AssetOverviewMetadataEventsQuery"},
    ),
    "partitions: extraction": ("/assets/extraction?view=partitions", {"PartitionHealthQuery"}),
    "partitions: source_document": (
        "/assets/source_document?view=partitions",
        {"PartitionHealthQuery"},
    ),
    "one partition: extraction": (
        "/assets/extraction?view=partitions&partition={key}",
        {"PartitionHealthQuery", "AssetPartitionDetailQuery"},
    ),
    "global asset lineage": ("/asset-groups", {"AssetGraphLiveQuery"}),
}
QUIET_SECONDS = 1.0
TARGET_SECONDS = 5.0
PAGE_TIMEOUT_SECONDS = 120.0
# As the browser tests start it (extraction_pipeline_tests/browser/ui.py): no sandbox in a
# container, and no calls to hosts this machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def browser_missing() -> str | None:
    """Why pages cannot be measured here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` package is not installed (pip install -e '.[dev]')"
    if _chromium() is None:
        return "no Chromium (`apt-get install -y chromium`)"
    return None


def _chromium() -> str | None:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).is_file() else None


def measure_pages(
    env: dict[str, str], workdir: Path, partition_key: str, visits: int = 2
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        _, workspace = start_code_server(env, workdir, stack)
        port = free_port()
        webserver = start_process(
            [
                str(BIN / "dagster-webserver"), "-w", str(workspace),
                "-h", "127.0.0.1", "-p", str(port),
            ],
            env,
            workdir / "webserver.log",
            stack,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/server_info", webserver), 180, "the webserver")
        meter = stack.enter_context(ProcessTreeMeter([webserver.pid], root_role="webserver"))
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        # The webserver loads the code location's snapshot.
        _visit(browser, f"{base}/assets", {"AssetGraphLiveQuery"})
        pages = {}
        for name, (path, shows) in PAGES.items():
            url = base + path.format(key=partition_key)
            pages[name] = [_visit(browser, url, shows)]
            while len(pages[name]) < visits and not pages[name][0]["timed_out"]:
                pages[name].append(_visit(browser, url, shows))  # a timed-out page: once
        webserver_rss = meter.peak_rss_by_role().get("webserver", 0)
        webserver_cpu = meter.cpu_by_role().get("webserver", 0.0)
    slowest = max((visit["load_s"] for visits in pages.values() for visit in visits), default=0.0)
    return {
        "pages": pages,
        "slowest_load_s": slowest,
        "target_s": TARGET_SECONDS,
        "webserver_peak_rss_bytes": webserver_rss,
        "webserver_cpu_s": round(webserver_cpu, 2),
    }


def _visit(browser: Any, url: str, shows: set[str]) -> dict[str, Any]:
    """Open `url` in a new browser profile; seconds until the queries in `shows` had answered
    and the network fell quiet (the last request's end), and its slowest GraphQL operation."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    began = time.monotonic()
    in_flight: set[Any] = set()
    finished: list[float] = []
    operations: list[tuple[float, str]] = []

    def sent(request: Any) -> None:
        in_flight.add(request)

    def done(request: Any) -> None:
        in_flight.discard(request)
        finished.append(time.monotonic() - began)
        address = urllib.parse.urlsplit(request.url)
        if address.path == "/graphql" and request.method == "POST":  # /graphql?op=<name>
            name = urllib.parse.parse_qs(address.query).get("op", ["?"])[0]
            operations.append((request.timing["responseEnd"] / 1000, name))

    page.on("request", sent)
    page.on("requestfinished", done)
    page.on("requestfailed", done)
    page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_SECONDS * 1000)

    def loaded() -> bool:
        if in_flight or not shows <= {name for _, name in operations}:
            return False
        return time.monotonic() - began - max(finished, default=0.0) >= QUIET_SECONDS

    while not loaded() and time.monotonic() - began < PAGE_TIMEOUT_SECONDS:
        page.wait_for_timeout(100)  # lets the browser's events reach the handlers above
    timed_out = not loaded()
    context.close()
    seconds, operation = max(operations, default=(0.0, "-"))
    return {
        "load_s": PAGE_TIMEOUT_SECONDS if timed_out else round(max(finished, default=0.0), 2),
        "timed_out": timed_out,
        "requests": len(finished),
        "graphql_queries": len(operations),
        "slowest_query": operation,
        "slowest_query_s": round(seconds, 2),
    }


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError("the webserver exited; see webserver.log")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
