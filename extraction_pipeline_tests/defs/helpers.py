"""Helpers for Dagster tests: definitions on test settings, files dropped into an inbox."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg

from extraction_pipeline.core.settings import Settings
from extraction_pipeline.definitions import build_definitions


def definitions_for(settings: Settings) -> dg.Definitions:
    return build_definitions(settings)


def drop(inbox: Path, name: str, data: bytes, age_seconds: float = 0.0) -> Path:
    """Write a file into the inbox the way a careful producer does (temp file, then rename)."""
    path = inbox / name
    temporary = inbox / f".{name}.part"
    temporary.write_bytes(data)
    if age_seconds:
        stamp = time.time() - age_seconds
        os.utime(temporary, (stamp, stamp))
    temporary.replace(path)
    return path


def tables_catch_up(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """What a `tables_automation` tick asks for now (a fresh cursor)."""
    sensor = defs.resolve_sensor_def("tables_automation")
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or [])
