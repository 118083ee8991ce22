"""Driving the Dagster UI of a running `extraction-pipeline dev` from tests.

The browser is Debian's Chromium (`/usr/bin/chromium`), driven by the PyPI `playwright` package:
a test tool cannot download its own browser here. What the UI launched is checked through the
same webserver's GraphQL endpoint.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from extraction_pipeline.core.documents.identity import document_key
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.e2e.processes import graphql

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 900}
TABLES = ("documents", "invoices", "invoice_line_items", "review_queue")
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}
TERMINAL_BACKFILL_STATUSES = {
    "COMPLETED",
    "COMPLETED_SUCCESS",
    "COMPLETED_FAILED",
    "FAILED",
    "CANCELED",
}
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
BACKFILL_TAG = "dagster/backfill"


def chromium_executable() -> str | None:
    """The Chromium to drive: EXTRACTION_TEST_CHROMIUM, else `chromium` on PATH, else Debian's."""
    for candidate in (
        os.environ.get("EXTRACTION_TEST_CHROMIUM"),
        shutil.which("chromium"),
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` package is not installed (pip install -e '.[dev]')"
    if chromium_executable() is None:
        return (
            "no Chromium: install Debian's (`apt-get install -y chromium`, which `make test` does "
            "as root) or set EXTRACTION_TEST_CHROMIUM to a Chromium binary"
        )
    return None


@dataclass(frozen=True)
class SampleDocument:
    """A dropped invoice PDF, its partition key and how the model is made to treat it."""

    file_name: str
    pdf: bytes
    invoice_number: str
    refused_by: str = ""  # "" (extracted), "rule" (a simulator fault rule) or "marker"

    @property
    def key(self) -> str:
        return document_key(self.file_name, hashlib.sha256(self.pdf).hexdigest())


@dataclass
class PipelineUI:
    """A running `extraction-pipeline dev`: its UI address, model simulator and documents."""

    url: str
    simulator: SimulatorControl
    documents: list[SampleDocument]
    log: Path

    def keys(self, refused_by: str | None = None) -> set[str]:
        return {d.key for d in self.documents if refused_by is None or d.refused_by == refused_by}

    @property
    def failed_keys(self) -> set[str]:
        return {d.key for d in self.documents if d.refused_by}

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        return graphql(self.url, query, **variables)

    def partition_statuses(self, asset: str) -> dict[str, set[str]]:
        data = self.graphql(PARTITION_STATUSES, path=[asset])["assetNodeOrError"]
        statuses = data["assetPartitionStatuses"]
        return {
            "keys": set(data["partitionKeys"]),
            "materialized": set(statuses["materializedPartitions"]),
            "failed": set(statuses["failedPartitions"]),
            "materializing": set(statuses["materializingPartitions"]),
        }

    def ordered_partition_keys(self, asset: str) -> list[str]:
        node = self.graphql(PARTITION_STATUSES, path=[asset])["assetNodeOrError"]
        return list(node["partitionKeys"])

    def runs_in_progress(self) -> int:
        runs = self.graphql(RUNS_IN_PROGRESS)["runsOrError"]["results"]
        return len(runs)

    def page_url(self, path: str) -> str:
        return f"{self.url}{path}"


PARTITION_STATUSES = """
query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      partitionKeys
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions materializingPartitions
        }
      }
    }
  }
}"""

RUNS_IN_PROGRESS = """
{
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    ... on Runs { results { runId } }
  }
}"""


def run_partitions(tags: Iterable[dict[str, str]], ordered_keys: list[str]) -> list[str]:
    """The partitions a run covers: its `dagster/partition` tag, or its range tags expanded
    over the partition order."""
    by_key = {tag["key"]: tag["value"] for tag in tags}
    if PARTITION_TAG in by_key:
        return [by_key[PARTITION_TAG]]
    start, end = by_key.get(RANGE_START_TAG), by_key.get(RANGE_END_TAG)
    if start is None or end is None:
        return []
    first, last = ordered_keys.index(start), ordered_keys.index(end)
    return ordered_keys[first : last + 1]


def open_page(page: Page, url: str) -> None:
    """Go to `url` and wait until the UI has loaded its data."""
    page.goto(url)
    page.wait_for_load_state("networkidle")


def screenshot(page: Page, name: str) -> Path:
    """Save the page as <name>.png under EXTRACTION_SCREENSHOTS_DIR (`make screenshots` sets it
    to docs/, whose pictures README shows) or else a temporary folder, so a test run leaves the
    tree as it found it; without the "Join the Dagster community" dialog."""
    from playwright.sync_api import expect

    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()
        expect(skip).to_have_count(0)
    configured = os.environ.get("EXTRACTION_SCREENSHOTS_DIR")
    folder = Path(configured) if configured else Path(tempfile.gettempdir()) / "pipeline-screens"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path


BACKFILL_ID = re.compile(r"Created backfill (\w+)")
