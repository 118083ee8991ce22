"""The dagster.yaml a deployment gets: the package's template, adapted to its settings.

EXTRACTION_RUN_SLOTS sets how many runs execute at once and the `openai` pool's slots (one per
run slot, so no run waits at its step); EXTRACTION_CELERY_BROKER swaps the run launcher for
dagster-celery's (instance.celery_workers). Without them the template is written as it is."""

from __future__ import annotations

import re

from extraction_pipeline.core.settings import Settings

TEMPLATE_SLOTS = 4
_LAUNCHER = re.compile(r"^run_launcher:\n(?:  .*\n)+", flags=re.MULTILINE)
CELERY_LAUNCHER = """run_launcher:
  # EXTRACTION_CELERY_BROKER is set: every run is a task for the Celery workers (README
  # "Scaling out"); broker and result backend are read from the environment, never written here.
  module: extraction_pipeline.instance.celery_workers
  class: CeleryWorkerRunLauncher
"""


def instance_yaml(template: str, settings: Settings) -> str:
    text = template
    if settings.run_slots != TEMPLATE_SLOTS:
        text = _replace_once(text, "max_concurrent_runs: 4\n", settings.run_slots)
        text = _replace_once(text, "default_limit: 4\n", settings.run_slots)
    if settings.celery_broker:
        text, count = _LAUNCHER.subn(CELERY_LAUNCHER, text, count=1)
        if count != 1:
            raise ValueError("the instance template has no run_launcher section")
    return text


def _replace_once(text: str, line: str, slots: int) -> str:
    if text.count(line) != 1:
        raise ValueError(f"the instance template must hold {line.strip()!r} exactly once")
    return text.replace(line, line.replace(str(TEMPLATE_SLOTS), str(slots)))
