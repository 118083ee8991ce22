"""Dagster's `dg` CLI on this project, as a Dagster user runs it from the project folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.names import EXTRACTION_KEY, SOURCE_KEY, documents_partitions
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.e2e.processes import PROJECT_ROOT
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY

BIN = Path(sys.executable).parent


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def bare_env() -> dict[str, str]:
    """The user's shell: no DAGSTER_HOME, no database URL, no key."""
    drop = {"DAGSTER_HOME", "EXTRACTION_PG_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def test_dg_check_and_list_defs_work_without_a_database() -> None:
    checked = run([str(BIN / "dg"), "check", "defs"], bare_env())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    listed = run([str(BIN / "dg"), "list", "defs", "--json"], bare_env())
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    assets = {asset["asset_key"] for asset in defs["assets"]}
    assert {"source_document", "extraction", "documents", "invoices"} <= assets
    assert {"inbox_sensor", "dead_letters"} <= {sensor["name"] for sensor in defs["sensors"]}
    assert {"nightly_intake", "retry_failed"} <= {s["name"] for s in defs["schedules"]}


def test_dg_launch_materialises_a_document_on_the_deployment_instance(
    tmp_path: Path,
    pg_url: str,
    instance: dg.DagsterInstance,
    model_simulator: SimulatorControl,
) -> None:
    data_dir = tmp_path / "data"
    env = {
        **bare_env(),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "EXTRACTION_DATA_DIR": str(data_dir),
        "EXTRACTION_PG_URL": pg_url,
        "OPENAI_BASE_URL": model_simulator.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
    }
    registry = DocumentRegistry(LocalObjectStore(data_dir))
    key = registry.register("march.pdf", invoice_pdf(make_invoice(3))).record.document_key
    instance.add_dynamic_partitions(documents_partitions.name, [key])

    launched = run(
        [
            *(str(BIN / "extraction-pipeline"), "dg", "launch"),
            *("--assets", "source_document,extraction", "--partition", key),
        ],
        env,
    )

    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
    for asset in (SOURCE_KEY, EXTRACTION_KEY):
        assert instance.get_materialized_partitions(asset) == {key}
    assert TEST_API_KEY not in launched.stdout + launched.stderr
