import dagster as dg

from extraction_pipeline.core.settings import Settings
from extraction_pipeline_tests.defs.helpers import definitions_for


def test_definitions_load_with_intake_wiring(settings: Settings) -> None:
    defs = definitions_for(settings)
    repository = defs.get_repository_def()
    assert repository.has_job("intake_job") and repository.has_job("source_job")
    sensor = defs.resolve_sensor_def("inbox_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    # A second under the interval: the daemon's 5 s loop would otherwise often make it 10 s.
    assert sensor.minimum_interval_seconds == settings.sensor_interval_seconds - 1
    asset = defs.resolve_assets_def("source_document")
    assert isinstance(asset.partitions_def, dg.DynamicPartitionsDefinition)
    assert asset.partitions_def.name == "documents"
    assert asset.descriptions_by_key[dg.AssetKey("source_document")]


def test_module_definitions_load_from_environment() -> None:
    from extraction_pipeline.definitions import defs

    assert defs.resolve_sensor_def("inbox_sensor") is not None


def test_extraction_resource_carries_every_extraction_setting() -> None:
    from extraction_pipeline.defs.resources import ExtractionAgentResource

    settings = Settings.from_env(
        {
            "EXTRACTION_MODEL": "gpt-5-mini",
            "EXTRACTION_API": "chat",
            "EXTRACTION_SCHEMA": "my_pkg.schemas:PurchaseOrder",
            "EXTRACTION_MAX_CONCURRENCY": "3",
            "EXTRACTION_RPM": "60",
            "EXTRACTION_STEP_RETRY_DELAY": "1.5",
        }
    ).extraction
    assert ExtractionAgentResource.from_settings(settings, environ={}).settings() == settings
