"""One `extraction-pipeline dev` for the browser tests, with documents extracted and refused.

The module's fixture starts the model simulator (refusing two documents by fault rule; a third
carries the `SIMULATE:REFUSE` marker and is always refused), runs `extraction-pipeline dev` on a
fresh database of the session's PostgreSQL, drops five invoices into the inbox and waits until
every document has settled. Tests share it: starting Dagster costs more than all of them.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.instance.postgres import drop_database, ensure_database
from extraction_pipeline.simulator import SimulatorConfig, SimulatorServer
from extraction_pipeline_tests.browser.ui import (
    CHROMIUM_ARGS,
    TABLES,
    VIEWPORT,
    PipelineUI,
    SampleDocument,
    chromium_executable,
)
from extraction_pipeline_tests.defs.helpers import drop
from extraction_pipeline_tests.e2e.processes import (
    answers,
    free_port,
    processes_mentioning,
    start,
    stop,
    wait_for,
)
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CLI = str(Path(sys.executable).parent / "extraction-pipeline")
# Cron expressions that never fire during a test run (1 January, 00:00), so that no schedule
# re-runs the failed documents behind the backfill's back.
NEVER = "0 0 1 1 *"


def sample_documents() -> list[SampleDocument]:
    """Five invoices: 1 and 3 are extracted, 2 and 4 refused by a simulator fault rule (which
    the backfill test lifts), 5 refused by the marker in its text (always)."""
    refused_by = {2: "rule", 4: "rule", 5: "marker"}
    documents = []
    for index in range(1, 6):
        invoice = make_invoice(index)
        how = refused_by.get(index, "")
        pdf = invoice_pdf(invoice, extra_text="SIMULATE:REFUSE" if how == "marker" else "")
        name = f"invoice {invoice.invoice_number}.pdf"
        documents.append(SampleDocument(name, pdf, invoice.invoice_number, how))
    return documents


def settled(ui: PipelineUI) -> bool:
    """Every document is materialised or failed, no run is under way, the tables exist."""
    statuses = ui.partition_statuses("extraction")
    if statuses["materialized"] | statuses["failed"] != ui.keys() or statuses["materializing"]:
        return False
    if ui.runs_in_progress():
        return False
    nodes = ui.graphql(
        "query ($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) "
        "{ assetMaterializations(limit: 1) { timestamp } } }",
        keys=[{"path": [name]} for name in TABLES],
    )["assetNodes"]
    return len(nodes) == len(TABLES) and all(node["assetMaterializations"] for node in nodes)


@pytest.fixture(scope="module")
def pipeline_ui(
    tmp_path_factory: pytest.TempPathFactory, pg_server_url: str
) -> Iterator[PipelineUI]:
    """`extraction-pipeline dev` on a fresh database, five documents in, all settled."""
    root = tmp_path_factory.mktemp("browser")
    database = f"browser_{uuid.uuid4().hex[:12]}"
    documents = sample_documents()
    with SimulatorServer(SimulatorConfig(latency_seconds=0.1)) as simulator:
        control = simulator.control()
        control.set_faults(
            *(f"refuse:match={d.invoice_number}" for d in documents if d.refused_by == "rule")
        )
        port = free_port()
        data_dir = root / "data"
        env = {
            "DAGSTER_HOME": str(root / "dagster_home"),
            "EXTRACTION_PG_URL": ensure_database(pg_server_url, database),
            "EXTRACTION_DATA_DIR": str(data_dir),
            "EXTRACTION_SENSOR_INTERVAL": "1",
            "EXTRACTION_SETTLE_SECONDS": "0.5",
            "EXTRACTION_TABLES_INTERVAL": "2",
            "EXTRACTION_STEP_RETRY_DELAY": "0.2",
            "EXTRACTION_NIGHTLY_CRON": NEVER,
            "EXTRACTION_RETRY_CRON": NEVER,
            "OPENAI_BASE_URL": simulator.base_url,
            "OPENAI_API_KEY": TEST_API_KEY,
        }
        log = root / "dev.log"
        dev = start([CLI, "dev", "--port", str(port)], env, log)
        ui = PipelineUI(f"http://127.0.0.1:{port}", control, documents, log)
        try:
            wait_for(lambda: answers(f"{ui.url}/server_info"), 180, "the Dagster UI")
            inbox = data_dir / "inbox"
            inbox.mkdir(parents=True, exist_ok=True)
            for document in documents:
                drop(inbox, document.file_name, document.pdf)
            try:
                wait_for(lambda: settled(ui), 150, "the five documents to settle", interval=1)
            except AssertionError as error:
                raise AssertionError(f"{error}; dev log:\n{log.read_text()[-3000:]}") from None
            yield ui
        finally:
            code = stop(dev, signal.SIGINT, timeout=90)  # Ctrl-C, as a user stops it
            drop_database(pg_server_url, database)
    assert code == 0, log.read_text()[-3000:]
    leftovers = [p for p in processes_mentioning(str(root)) if p.pid != os.getpid()]
    assert leftovers == [], [p.cmdline() for p in leftovers]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium with a fresh profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A new browser context (fresh cookies and storage) and page for one test."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(20_000)
    page = context.new_page()
    # On a fresh profile a "Join the Dagster community" dialog covers the page, sometimes
    # seconds after load: dismiss it whenever it is in the way of an action.
    page.add_locator_handler(
        page.get_by_role("button", name="Skip"), lambda skip: skip.click(), no_wait_after=True
    )
    yield page
    context.close()
