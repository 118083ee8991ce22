"""The benchmark scripts' `--quick` modes still run (so the benchmarks cannot rot): each exits 0,
writes its JSON figures with the expected keys holding positive numbers, and its figures obey
what makes them meaningful (every document extracted once, the cap held, equal tables).

The three that start a real dagster-daemon take about a minute each on a 2-core machine and are
marked `benchmark`; `pytest -m "not benchmark"` leaves them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

CASES = [
    pytest.param(
        "pdf_reading",
        ["read_pdf.pages_per_s", "pypdf.pages_per_s", "ratio_read_pdf_over_pypdf"],
        60,
        id="pdf_reading",
    ),
    pytest.param(
        "scale",
        [
            "register.register_docs_per_s",
            "register.add_partitions_s",
            "sensor_tick.sensor_tick_s",
            "schedule_ticks.nightly_intake_tick_s",
            "schedule_ticks.nightly_intake_run_requests",
            "schedule_ticks.retry_failed_run_requests",
            "event_history.events_per_doc",
            "refresh.refresh_1000_new_s",
            "event_log.event_log_bytes_per_doc",
            "event_log.event_log_rows_per_doc",
            "peak_rss_bytes.benchmark driver",
        ],
        480,
        # Two idle measurements and two rounds of UI pages: over pytest's 300 s default.
        marks=pytest.mark.timeout(540),
        id="scale",
    ),
    pytest.param(
        "batch",
        [
            "online.cost_usd",
            "batch.cost_usd",
            "batch.batches",
            "cost_ratio_batch_over_online",
            "invoice_tables_equal",
        ],
        120,
        id="batch",
    ),
    pytest.param(
        "scale_out",
        [],  # its figures are per case: see invariants
        300,
        marks=pytest.mark.benchmark,
        id="scale_out",
    ),
    pytest.param(
        "throughput",
        [
            "plain.docs_per_s",
            "plain.peak_in_flight",
            "pipeline.docs_per_s",
            "pipeline.peak_in_flight",
            "pipeline.pipeline_cpu_ms_per_doc",
            "ratios.pipeline_over_plain",
            "ratios.pipeline_over_ideal",
        ],
        300,
        marks=pytest.mark.benchmark,
        id="throughput",
    ),
    pytest.param(
        "overhead",
        [
            "pipeline_cpu_ms_per_doc",
            "breakdown.read_pdf.cpu_ms_per_doc",
            "breakdown.model_client.cpu_ms_per_doc",
            "breakdown.dagster_intake_run.cpu_ms_per_doc",
            "breakdown.refresh_tables.cpu_ms_per_doc",
        ],
        300,
        marks=pytest.mark.benchmark,
        id="overhead",
    ),
    pytest.param(
        "latency",
        ["median_s", "target_s", "ratio_to_target", "median_stages_s.extraction_s"],
        300,
        marks=pytest.mark.benchmark,
        id="latency",
    ),
]


def figure(figures: dict, dotted: str) -> object:
    value: object = figures
    for part in dotted.split("."):
        assert isinstance(value, dict) and part in value, f"missing {dotted!r}"
        value = value[part]
    return value


def invariants(name: str, figures: dict, parameters: dict) -> None:
    """The benchmark's own checks, and what they rest on."""
    if name == "throughput":
        assert figures["self_checks"] and all(figures["self_checks"].values())
        n, cap = parameters["documents"], parameters["concurrency"]
        for side in ("plain", "pipeline"):
            assert figures[side]["model_calls"] == n, side
            assert figures[side]["peak_in_flight"] <= cap, side
        assert figures["pipeline"]["invoices_distinct_keys"] == n
        assert figures["pipeline"]["documents_rows"] == n
    elif name == "scale":
        # The sensor took the 1,000 new files and added their partitions itself: nothing left
        # for the daemon to check key by key.
        for tick in (figures["sensor_tick"], figures["sensor_tick_emptied_folder"]):
            assert (tick["new_files"], tick["requested_keys"]) == (1000, 0)
        assert figures["sensor_tick_emptied_folder"]["files_in_folder"] == 1000
        # The schedules looked at a deployment's event log: about 4 events per document, and
        # failures still waiting, which the retry schedule takes.
        assert 4.0 <= figures["event_history"]["events_per_doc"] <= 4.2
        assert figures["schedule_ticks"]["retry_failed_run_requests"] >= 1
        # The tables were never refreshed: the sensor asked for one refresh, then waited for it.
        ticks = figures["schedule_ticks"]
        assert (
            ticks["tables_automation_first_requests"],
            ticks["tables_automation_next_requests"],
        ) == (1, 0)
        # Archiving left exactly the unsettled documents live: the unextracted, and the failed
        # ones still due for a retry, which the retry schedule still takes.
        archive = figures["archive"]
        assert archive["live_after"] == sum(archive["kept"].values()) > 0
        assert set(archive["kept"]) == {"unsettled"}
        assert archive["after"]["retry_failed_run_requests"] >= 1
        # The sensor removed what it archived itself (no request left to the daemon), and the
        # UI's read of the partition status was timed after archiving and after new files.
        assert archive["archive_tick_archived"] > 0 and archive["archive_tick_requests"] == 0
        assert archive["status_read_s"] >= 0
        assert figures["sensor_tick_emptied_folder"]["status_read_s"] >= 0
        # The idle deployment was measured alive, every process of it, before and after, and
        # idle: no run started in its window.
        for idle in (figures["idle_live"], figures["idle"]):
            assert idle["daemon_alive"] and {"daemon", "code server", "postgres"} <= set(
                idle["percent_of_a_core"]
            )
            assert idle["runs_launched"] == 0
        # The UI's pages were opened in a browser and each loaded its data, before and after
        # archiving (CI has Chromium; elsewhere a missing browser is said, not measured).
        for ui in figures["ui"].values():
            if "skipped" in ui and not _in_ci():
                continue
            assert "skipped" not in ui, ui
            for name, visits in ui["pages"].items():
                for visit in visits:
                    assert not visit["timed_out"] and visit["graphql_queries"] > 0, (name, visit)
    elif name == "scale_out":
        # Each worker count extracted every document once, within the deployment's cap.
        n, cap = parameters["documents"], parameters["concurrency"]
        assert all(figures["self_checks"].values()), figures["self_checks"]
        for case in figures["cases"]:
            assert case["model_calls"] == n and case["invoice_rows"] == n, case
            assert case["peak_in_flight"] <= cap and sum(case["runs_per_worker"]) >= 1, case
    elif name == "batch":
        assert figures["invoice_tables_equal"] == 1  # the script writes 1 or 0
        assert 0.45 <= figures["cost_ratio_batch_over_online"] <= 0.55


@pytest.mark.parametrize(("name", "keys", "timeout"), CASES)
def test_quick_mode_runs_and_writes_its_figures(
    name: str, keys: list[str], timeout: int, tmp_path: Path
) -> None:
    if name == "scale_out":
        _require_scale_out_services()
    env = {**os.environ, "BENCHMARK_RESULTS_DIR": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["benchmark"] == name
    for key in keys:
        value = figure(result["figures"], key)
        assert isinstance(value, int | float) and value > 0, f"{key} = {value!r}"
    invariants(name, result["figures"], result["settings"])


def _require_scale_out_services() -> None:
    """A broker and the `weed` binary; outside CI their absence skips, in CI it fails."""
    from extraction_pipeline.cli.cluster import local_broker
    from extraction_pipeline.instance.object_server import weed_binary

    missing = [
        what
        for what, ok in (("a RabbitMQ or Redis", local_broker()), ("weed", weed_binary()))
        if ok is None
    ]
    if missing and _in_ci():
        pytest.fail(f"scale_out needs {' and '.join(missing)}")
    if missing:
        pytest.skip(f"scale_out needs {' and '.join(missing)}")


def test_the_scale_benchmarks_bulk_staging_leaves_what_dagsters_own_writes_leave() -> None:
    """benchmarks/staging.py stages one history per event (the storage's store_event) and by
    COPY into fresh databases and compares every row and the product's answers: it uses
    Dagster's private row builders, so an upgrade that changes them must show here."""
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "staging.py"), "-n", "300"],
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.stdout.count(": 0 differences") == 2, completed.stdout


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true")
