"""User journeys in the Dagster UI of `extraction-pipeline dev`, in headless Chromium: lineage,
failed documents, a backfill of exactly those, a document's metadata, sensors and schedules.

Each journey saves a screenshot into docs/ (shown in the README). The tests share one running
instance (see conftest.py); the backfill test, last, changes it: the documents it re-runs
are extracted afterwards.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import TYPE_CHECKING

import pytest

from extraction_pipeline_tests.browser.ui import browser_unavailable

if reason := browser_unavailable():
    if os.environ.get("EXTRACTION_REQUIRE_BROWSER"):
        pytest.fail(f"EXTRACTION_REQUIRE_BROWSER is set, but {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}", allow_module_level=True)

from playwright.sync_api import expect

from extraction_pipeline_tests.browser.ui import (
    BACKFILL_ID,
    BACKFILL_TAG,
    TABLES,
    TERMINAL_BACKFILL_STATUSES,
    TERMINAL_RUN_STATUSES,
    PipelineUI,
    open_page,
    run_partitions,
    screenshot,
)
from extraction_pipeline_tests.e2e.processes import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REQUIRED_SENSORS = ("inbox_sensor", "tables_automation")
TICK_TIME = re.compile(r"\d{1,2}:\d{2}:\d{2} [AP]M")

ASSET_NODES = """
query ($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    description
    staleStatus
    dependencyKeys { path }
    assetChecksOrError {
      ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
    }
    metadataEntries {
      label
      ... on TableSchemaMetadataEntry { schema { columns { name } } }
    }
  }
}"""

BACKFILL = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill {
      id status partitionNames
      assetSelection { path }
      runs(limit: 100) { runId status tags { key value } assetSelection { path } }
    }
  }
}"""

AUTOMATIONS = """
{
  sensorsOrError(repositorySelector: {repositoryName: "__repository__",
                                      repositoryLocationName: "extraction_pipeline"}) {
    ... on Sensors { results { name sensorState { status ticks(limit: 1) { timestamp status } } } }
  }
  schedulesOrError(repositorySelector: {repositoryName: "__repository__",
                                        repositoryLocationName: "extraction_pipeline"}) {
    ... on Schedules {
      results { name scheduleState { status ticks(limit: 1) { timestamp status } } }
    }
  }
}"""


def asset_nodes(ui: PipelineUI, names: tuple[str, ...]) -> dict[str, dict]:
    nodes = ui.graphql(ASSET_NODES, keys=[{"path": [n]} for n in names])["assetNodes"]
    return {node["assetKey"]["path"][-1]: node for node in nodes}


def test_asset_graph_shows_lineage_from_source_document_through_extraction_to_the_tables(
    page: Page, pipeline_ui: PipelineUI
) -> None:
    nodes = asset_nodes(pipeline_ui, ("source_document", "extraction", *TABLES))
    assert [d["path"] for d in nodes["extraction"]["dependencyKeys"]] == [["source_document"]]
    for table in TABLES:  # source_document too: unreadable documents' rows come from it
        deps = sorted(d["path"] for d in nodes[table]["dependencyKeys"])
        assert deps == [["extraction"], ["source_document"]]

    open_page(page, pipeline_ui.page_url("/assets/extraction?view=lineage"))
    graph_names = ("source_document", *TABLES)
    for name in graph_names:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    boxes = {name: page.get_by_text(name, exact=True).first.bounding_box() for name in graph_names}
    assert all(boxes.values()), boxes
    source_x = boxes["source_document"]["x"]  # type: ignore[index]
    tables_x = min(boxes[t]["x"] for t in TABLES)  # type: ignore[index]
    # The graph is laid out left to right by dependency: an `extraction` node sits between.
    extraction_xs = [
        box["x"]
        for box in (e.bounding_box() for e in page.get_by_text("extraction", exact=True).all())
        if box and box["height"] > 0
    ]
    assert any(source_x < x < tables_x for x in extraction_xs), (source_x, extraction_xs, tables_x)
    screenshot(page, "asset-graph")


def test_table_assets_show_their_descriptions_and_column_schemas(
    page: Page, pipeline_ui: PipelineUI
) -> None:
    nodes = asset_nodes(pipeline_ui, TABLES)
    for table in TABLES:
        node = nodes[table]
        (schema,) = [e for e in node["metadataEntries"] if e["label"] == "dagster/column_schema"]
        columns = [column["name"] for column in schema["schema"]["columns"]]
        assert "document_key" in columns and node["description"], node
        # Refreshed by the intake runs themselves: in sync with the documents, not "Unsynced".
        assert node["staleStatus"] == "FRESH", (table, node["staleStatus"])
        if table == "invoices":
            checks = {
                check["name"]: check["executionForLatestMaterialization"]
                for check in node["assetChecksOrError"]["checks"]
            }
            assert set(checks) == {"required_fields", "totals_add_up", "dates_parse"}
            # Evaluated against the latest refresh (the demo corpus has a bad total).
            assert all(e and e["status"] in ("SUCCEEDED", "FAILED") for e in checks.values())

        open_page(page, pipeline_ui.page_url(f"/assets/{table}"))
        expect(page.get_by_text(node["description"].strip())).to_be_visible()
        columns_section = page.get_by_text("Columns", exact=True).first
        expect(columns_section).to_be_visible()
        for column in columns:
            expect(page.get_by_text(column, exact=True).first).to_be_attached()
        if table == "invoices":
            screenshot(page, "table-columns")


def test_partitions_view_shows_the_refused_documents_as_failed(
    page: Page, pipeline_ui: PipelineUI
) -> None:
    failed, extracted = pipeline_ui.failed_keys, pipeline_ui.keys(refused_by="")
    statuses = pipeline_ui.partition_statuses("extraction")
    assert (statuses["failed"], statuses["materialized"]) == (failed, extracted)

    open_page(page, pipeline_ui.page_url("/assets/extraction?view=partitions"))
    expect(page.get_by_text(f"Failed ({len(failed)})")).to_be_visible()
    expect(page.get_by_text(f"Materialized ({len(extracted)})")).to_be_visible()
    for status in ("Materialized", "Materializing"):  # leave only the failed ones listed
        page.get_by_text(re.compile(rf"^{status} \(\d+\)$")).click()
    expect(page).to_have_url(re.compile(r"status=FAILED"))
    for key in failed:
        expect(page.get_by_text(key, exact=True).first).to_be_attached()
    for key in extracted:
        expect(page.get_by_text(key, exact=True)).to_have_count(0)
    marker_key = next(iter(pipeline_ui.keys(refused_by="marker")))
    open_page(page, f"{page.url}&partition={marker_key}")
    expect(page.get_by_text("failed, and did not materialize this asset")).to_be_visible()
    screenshot(page, "partitions-failed")


def test_document_materialization_shows_record_tokens_cost_and_model(
    page: Page, pipeline_ui: PipelineUI
) -> None:
    document = next(d for d in pipeline_ui.documents if not d.refused_by)
    open_page(
        page,
        pipeline_ui.page_url(f"/assets/extraction?view=partitions&partition={document.key}"),
    )
    expect(page.get_by_text("Latest materialization")).to_be_visible()

    def row(label: str) -> str:
        cells = page.locator("tr").filter(has=page.get_by_text(label, exact=True))
        expect(cells.first).to_be_visible()
        return cells.first.inner_text().split(label, 1)[1].strip()

    record = json.loads(row("record"))
    assert record["invoice_number"] == document.invoice_number
    assert int(row("input_tokens")) > 0 and int(row("output_tokens")) > 0
    assert float(row("cost_usd")) > 0
    assert row("model") == "gpt-4.1-mini"
    page.set_viewport_size({"width": 1400, "height": 1700})  # the record and the figures below
    screenshot(page, "document-metadata")


def test_sensors_and_schedules_show_as_running_with_their_last_ticks(
    page: Page, pipeline_ui: PipelineUI
) -> None:
    data = pipeline_ui.graphql(AUTOMATIONS)
    sensors = {s["name"]: s["sensorState"] for s in data["sensorsOrError"]["results"]}
    schedules = {s["name"]: s["scheduleState"] for s in data["schedulesOrError"]["results"]}
    for name in REQUIRED_SENSORS:
        assert sensors[name]["status"] == "RUNNING"
        (tick,) = sensors[name]["ticks"]
        assert time.time() - tick["timestamp"] < 120, (name, tick)
    for name, state in schedules.items():
        assert state["status"] == "RUNNING", name

    open_page(page, pipeline_ui.page_url("/automation"))
    rows = {
        name: automation_row(page, kind, name)
        for kind, names in (("sensors", sensors), ("schedules", schedules))
        for name in names
    }
    screenshot(page, "automation")
    for name in [*REQUIRED_SENSORS, *schedules]:
        expect(rows[name].get_by_role("checkbox").last).to_be_checked()  # the running toggle
    # The list shows only ticks that requested runs; each page shows the latest tick of any kind.
    for kind, states in (("sensors", sensors), ("schedules", schedules)):
        for name, state in states.items():
            if name not in REQUIRED_SENSORS and kind == "sensors":
                continue
            open_page(page, pipeline_ui.page_url(f"/locations/extraction_pipeline/{kind}/{name}"))
            expect(page.get_by_text("Running", exact=True).first).to_be_visible()
            expect(page.get_by_role("checkbox").first).to_be_checked()
            if state["ticks"]:
                latest = page.locator("tr").filter(has=page.get_by_text("Latest tick", exact=True))
                expect(latest.first).to_contain_text(TICK_TIME)
            if kind == "schedules":
                expect(page.get_by_text("Next tick", exact=True).first).to_be_visible()
            if name == "inbox_sensor":
                screenshot(page, "inbox-sensor")


def test_backfill_of_the_failed_partitions_reruns_exactly_them(
    page: Page, pipeline_ui: PipelineUI
) -> None:
    failed = pipeline_ui.partition_statuses("extraction")["failed"]
    assert failed == pipeline_ui.failed_keys
    pipeline_ui.simulator.set_faults()  # the rule-refused documents may now succeed

    open_page(page, pipeline_ui.page_url("/assets/extraction?view=partitions"))
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Launch runs to materialize extraction")).to_be_visible()
    dialog.get_by_role("button", name="Failed", exact=True).click()
    expect(dialog.get_by_text(f"{len(failed)} partitions")).to_be_visible()
    for key in failed:
        expect(dialog.get_by_text(key, exact=True).first).to_be_attached()
    screenshot(page, "backfill-launch")
    dialog.get_by_role("button", name="Launch backfill").click()
    toast = page.get_by_text(BACKFILL_ID)
    expect(toast).to_be_visible()
    match = BACKFILL_ID.search(toast.inner_text())
    assert match, toast.inner_text()
    backfill_id = match.group(1)

    def backfill() -> dict:
        return pipeline_ui.graphql(BACKFILL, id=backfill_id)["partitionBackfillOrError"]

    def done() -> bool:
        state = backfill()
        return state["status"] in TERMINAL_BACKFILL_STATUSES and all(
            run["status"] in TERMINAL_RUN_STATUSES for run in state["runs"]
        )

    wait_for(done, timeout=150, what=f"backfill {backfill_id} to finish", interval=1)
    state = backfill()
    assert set(state["partitionNames"]) == failed
    assert [a["path"] for a in state["assetSelection"]] == [["extraction"]]
    order = pipeline_ui.ordered_partition_keys("extraction")
    covered = [key for run in state["runs"] for key in run_partitions(run["tags"], order)]
    assert sorted(covered) == sorted(failed), "each failed partition re-run exactly once"
    for run in state["runs"]:
        assert {"key": BACKFILL_TAG, "value": backfill_id} in run["tags"]
        assert [a["path"] for a in run["assetSelection"]] == [["extraction"]]

    after = pipeline_ui.partition_statuses("extraction")
    assert after["failed"] == pipeline_ui.keys(refused_by="marker")
    assert after["materialized"] == pipeline_ui.keys() - pipeline_ui.keys(refused_by="marker")

    open_page(page, pipeline_ui.page_url(f"/runs/b/{backfill_id}"))
    for key in failed:
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    screenshot(page, "backfill")
    page.get_by_role("tab", name="Runs").click()
    for run in state["runs"]:
        expect(page.get_by_text(run["runId"][:8], exact=True).first).to_be_visible()
    screenshot(page, "backfill-runs")


def automation_row(page: Page, kind: str, name: str) -> Locator:
    """The row of a sensor or schedule on the Automation page: the closest element holding its
    link, the selection checkbox and the running toggle."""
    link = page.locator(f'a[href$="/{kind}/{name}"]')
    expect(link).to_be_visible()
    return link.locator("xpath=ancestor::*[count(.//input[@type='checkbox']) >= 2][1]")
