"""`extraction-pipeline dev` as a user runs it: embedded Postgres, UI on its port, clean stop."""

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
from extraction_pipeline_tests.e2e.processes import (
    answers,
    free_port,
    processes_mentioning,
    start,
    stop,
    wait_for,
)

CLI = str(Path(sys.executable).parent / "extraction-pipeline")


def test_dev_serves_the_ui_on_embedded_postgres_and_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    env = {
        "DAGSTER_HOME": str(home),
        "EXTRACTION_DATA_DIR": str(tmp_path / "data"),
        "EXTRACTION_PG_URL": "",
    }
    log = tmp_path / "dev.log"
    dev = start([CLI, "dev", "--port", str(port)], env, log)
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/server_info"), 180, "the UI")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info") as response:
            assert "dagster_version" in json.loads(response.read())
        banner = log.read_text()
        assert f"http://127.0.0.1:{port}" in banner
        assert "embedded PostgreSQL" in banner
        assert str(tmp_path / "data" / "inbox") in banner
        assert (home / "pgdata" / "PG_VERSION").is_file()
        assert (home / "dagster.yaml").read_text() == INSTANCE_TEMPLATE.read_text()
        # Run in the project folder, as README says: Dagster's current command, and no
        # dagster.yaml there for Dagster to warn about.
        assert "superseded" not in banner.lower()
        assert "will not be used" not in banner
    finally:
        code = stop(dev, signal.SIGINT, timeout=90)
    assert code == 0, log.read_text()[-3000:]
    assert "extraction-pipeline dev: stopped" in log.read_text()
    leftovers = [p for p in processes_mentioning(str(tmp_path)) if p.pid != os.getpid()]
    assert leftovers == [], [p.cmdline() for p in leftovers]
