"""The dagster.yaml a deployment gets from its settings."""

import yaml

from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.instance.instance_yaml import instance_yaml

TEMPLATE = INSTANCE_TEMPLATE.read_text()


def test_the_defaults_get_the_template_as_it_is() -> None:
    assert instance_yaml(TEMPLATE, Settings.from_env({})) == TEMPLATE


def test_celery_swaps_the_launcher_and_run_slots_set_runs_and_pool_together() -> None:
    env = {
        "EXTRACTION_CELERY_BROKER": "pyamqp://user:s3cret@broker:5672//",
        "EXTRACTION_RUN_SLOTS": "8",
    }
    config = yaml.safe_load(instance_yaml(TEMPLATE, Settings.from_env(env)))
    assert config["run_launcher"] == {
        "module": "extraction_pipeline.instance.celery_workers",
        "class": "CeleryWorkerRunLauncher",
    }
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 8
    assert config["concurrency"]["pools"]["default_limit"] == 8
    assert "s3cret" not in instance_yaml(TEMPLATE, Settings.from_env(env))  # read from env only
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
