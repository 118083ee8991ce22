"""Settings: each knob declared once, read from its variable, and refused with its name."""

import re
from pathlib import Path

import pytest

from extraction_pipeline.core.settings import Settings, SettingsError, declared_variables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_need_no_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"EXTRACTION_DATA_DIR": str(tmp_path)})

    assert settings.data_dir == tmp_path
    assert settings.inbox == tmp_path / "inbox"
    assert settings.extraction.max_concurrency == 8
    assert settings.operations.max_attempts == 3
    assert settings.pdf_limits.max_pages == 200


def test_every_variable_reaches_its_field() -> None:
    env = {
        "EXTRACTION_INBOX": "drop",
        "EXTRACTION_SENSOR_INTERVAL": "7",
        "EXTRACTION_MAX_PAGES": "3",
        "EXTRACTION_SCHEMA": "pkg.mod:Model",
        "EXTRACTION_API": "chat",
        "EXTRACTION_RPM": "60",
        "EXTRACTION_STOP_GRACE_SECONDS": "2.5",
        "EXTRACTION_NOTIFY_SUCCESS": "yes",
        "EXTRACTION_WEBHOOK_URL": "https://hooks.example/secret-token",
    }

    settings = Settings.from_env(env)

    assert settings.inbox == Path("drop").absolute()
    assert settings.sensor_interval_seconds == 7
    assert settings.pdf_limits.max_pages == 3
    assert (settings.extraction.schema_ref, settings.extraction.api_mode) == (
        "pkg.mod:Model",
        "chat",
    )
    assert (settings.extraction.rpm, settings.extraction.stop_grace_seconds) == (60, 2.5)
    assert settings.operations.notify_success is True
    assert "secret-token" not in repr(settings)  # a webhook URL may carry a token


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"EXTRACTION_MAX_CONCURRENCY": "0"},
            "EXTRACTION_MAX_CONCURRENCY: .*greater than or equal to 1",
        ),
        ({"EXTRACTION_TIMEOUT": "soon"}, "EXTRACTION_TIMEOUT: .*valid number.*'soon'"),
        ({"EXTRACTION_API": "soap"}, "EXTRACTION_API: .*'responses' or 'chat'"),
        ({"EXTRACTION_MAX_ATTEMPTS": "1.5"}, "EXTRACTION_MAX_ATTEMPTS: .*integer"),
        ({"EXTRACTION_PRICES": "{not json"}, "EXTRACTION_PRICES: "),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_readme_documents_every_declared_variable() -> None:
    table = set(re.findall(r"^\| `([A-Z_]+)`", README.read_text(), flags=re.MULTILINE))
    table |= set(re.findall(r"^\| `[A-Z_]+`, `([A-Z_]+)`", README.read_text(), flags=re.MULTILINE))
    assert set(declared_variables()) - table == set()
