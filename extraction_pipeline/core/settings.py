"""Deployment settings, each declared once: name, type, default, bounds, environment variable and
description on one field. `from_env` reads them when asked, never at import; the Dagster
resource inherits the extraction fields, so the UI shows the same declarations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from extraction_pipeline.core.documents.pdf import PdfLimits
from extraction_pipeline.core.model.config import DEFAULT_MODEL, AgentConfig
from extraction_pipeline.core.model.costs import InvalidPriceTable, load_price_table
from extraction_pipeline.core.model.types import ApiMode, InputMode
from extraction_pipeline.core.store import is_object_storage_url

# Defaults of the agent's own knobs, so a deployment default is the agent's default.
_AGENT = AgentConfig()


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


def setting(env: str, default: Any, description: str, **bounds: Any) -> Any:
    """A field read from the environment variable `env` (unset or empty: `default`)."""
    return Field(
        default, description=f"{description} ({env})", json_schema_extra={"env": env}, **bounds
    )


class _FromEnv(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def env_values(cls, env: Mapping[str, str]) -> dict[str, str]:
        """The raw values of this class's fields that the environment sets."""
        values = {}
        for name, field in cls.model_fields.items():
            variable = (field.json_schema_extra or {}).get("env")  # type: ignore[union-attr]
            if isinstance(variable, str) and env.get(variable):
                values[name] = env[variable]
        return values

    @classmethod
    def from_env(cls, env: Mapping[str, str], **values: Any) -> Any:
        try:
            return cls.model_validate({**cls.env_values(env), **values})
        except ValidationError as error:
            raise SettingsError(_explain(cls, error)) from None


class ExtractionSettings(_FromEnv):
    """How documents are extracted: model, schema, concurrency and limits."""

    model: str = setting("EXTRACTION_MODEL", DEFAULT_MODEL, "Model name")
    api_mode: ApiMode = setting("EXTRACTION_API", "responses", "responses or chat")
    input_mode: InputMode = setting("EXTRACTION_INPUT", "auto", "auto, text, pdf or images")
    schema_ref: str = setting("EXTRACTION_SCHEMA", "invoice", "'invoice' or 'package.module:Model'")
    mode: Literal["online", "batch"] = setting(
        "EXTRACTION_MODE", "online", "online, or batch: the Batch API at half the token price"
    )
    batch_poll_seconds: int = setting(
        "EXTRACTION_BATCH_POLL_SECONDS", 30, "Shortest interval between polls of a batch", ge=1
    )
    base_url: str | None = setting("OPENAI_BASE_URL", None, "An OpenAI-compatible endpoint")
    max_concurrency: int = setting(
        "EXTRACTION_MAX_CONCURRENCY",
        _AGENT.max_concurrency,
        "Model calls in flight, all runs together",
        ge=1,
    )
    rpm: int = setting("EXTRACTION_RPM", 0, "Requests per minute, all runs; 0: no limit", ge=0)
    tpm: int = setting("EXTRACTION_TPM", 0, "Tokens per minute, all runs; 0: no limit", ge=0)
    timeout_seconds: float = setting(
        "EXTRACTION_TIMEOUT", _AGENT.timeout_seconds, "Seconds per model call", gt=0
    )
    max_retries: int = setting(
        "EXTRACTION_MAX_RETRIES", _AGENT.max_retries, "Agent retries of a transient failure", ge=0
    )
    prices: str | None = setting("EXTRACTION_PRICES", None, "Price table: JSON or a file path")
    step_retry_delay_seconds: float = setting(
        "EXTRACTION_STEP_RETRY_DELAY", 15.0, "Base delay of the step retries", ge=0
    )
    # On a stop (Ctrl-C of `dev`, run termination), calls already sent get this long to answer,
    # so what was paid for is stored; the rest are not sent.
    stop_grace_seconds: float = setting(
        "EXTRACTION_STOP_GRACE_SECONDS", 15.0, "Seconds in-flight calls get on a stop", ge=0
    )

    def agent_config(self, api_key: str | None) -> AgentConfig:
        return AgentConfig(
            model=self.model,
            api_mode=self.api_mode,
            input_mode=self.input_mode,
            base_url=self.base_url,
            api_key=api_key,
            max_concurrency=self.max_concurrency,
            rpm=self.rpm or None,
            tpm=self.tpm or None,
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            prices=load_price_table(self.prices),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], **values: Any) -> ExtractionSettings:
        settings: ExtractionSettings = super().from_env(env, **values)
        try:
            load_price_table(settings.prices)
        except InvalidPriceTable as error:
            raise SettingsError(f"EXTRACTION_PRICES: {error}") from error
        return settings


class OperationsSettings(_FromEnv):
    """Schedules, retries, dead letters and notifications."""

    nightly_cron: str = setting("EXTRACTION_NIGHTLY_CRON", "0 2 * * *", "When nightly_intake runs")
    retry_cron: str = setting("EXTRACTION_RETRY_CRON", "0 * * * *", "When retry_failed runs")
    timezone: str = setting("EXTRACTION_TIMEZONE", "UTC", "Timezone of both schedules")
    max_attempts: int = setting("EXTRACTION_MAX_ATTEMPTS", 3, "Attempts before a dead letter", ge=1)
    max_runs_per_tick: int = setting(
        "EXTRACTION_SCHEDULE_MAX_RUNS", 20, "Runs a schedule tick may launch", ge=1
    )
    webhook_url: str | None = Field(
        default=None,
        description="Where dead letters are POSTed (EXTRACTION_WEBHOOK_URL); may hold a token, "
        "so it is never logged or shown",
        json_schema_extra={"env": "EXTRACTION_WEBHOOK_URL"},
        repr=False,
    )
    notify_success: bool = setting("EXTRACTION_NOTIFY_SUCCESS", False, "Also POST successful runs")
    archive_after_days: float = setting(
        "EXTRACTION_ARCHIVE_AFTER_DAYS",
        0.0,
        "Days after registration a settled document's partition is archived; 0: never",
        ge=0,
    )


class Settings(_FromEnv):
    """Where documents come from and go, and how intake behaves. See README, "Configuration"."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    data_dir: Path | str = setting(
        "EXTRACTION_DATA_DIR",
        Path("data"),
        "Root of the stored data: a folder, or s3://bucket/prefix (object storage)",
    )
    inbox: Path | str = setting(
        "EXTRACTION_INBOX",
        None,
        "The drop folder, or s3://bucket/prefix; default: <data dir>/inbox, ./inbox on S3",
    )
    sensor_interval_seconds: int = setting(
        "EXTRACTION_SENSOR_INTERVAL", 5, "Seconds between sensor ticks", ge=1
    )
    sensor_max_files: int = setting(
        "EXTRACTION_SENSOR_MAX_FILES", 1000, "Files taken per sensor tick", ge=1
    )
    sensor_watch_seconds: float = setting(
        "EXTRACTION_SENSOR_WATCH_SECONDS",
        3.0,
        "Seconds a tick that finds nothing watches the drop folder; 0: off",
        ge=0,
    )
    settle_seconds: float = setting(
        "EXTRACTION_SETTLE_SECONDS", 1.0, "Seconds a file must be unchanged before it is read", ge=0
    )
    max_bytes: int = setting("EXTRACTION_MAX_BYTES", PdfLimits.max_bytes, "Largest file", ge=1)
    max_pages: int = setting("EXTRACTION_MAX_PAGES", PdfLimits.max_pages, "Longest PDF", ge=1)
    tables_interval_seconds: int = setting(
        "EXTRACTION_TABLES_INTERVAL", 10, "Seconds between tables_automation ticks", ge=1
    )
    celery_broker: str | None = setting(
        "EXTRACTION_CELERY_BROKER",
        None,
        "Celery broker URL; when set, runs execute on Celery workers (dagster-celery)",
        repr=False,
    )
    celery_backend: str | None = setting(
        "EXTRACTION_CELERY_BACKEND",
        None,
        "Celery result backend URL; default: the deployment's Postgres",
        repr=False,
    )
    celery_queue: str = setting(
        "EXTRACTION_CELERY_QUEUE", "dagster", "The Celery queue runs are sent to and workers read"
    )
    run_slots: int = setting(
        "EXTRACTION_RUN_SLOTS", 4, "Runs executing at once (on Celery: worker processes)", ge=1
    )
    documents_per_run: int = setting(
        "EXTRACTION_DOCUMENTS_PER_RUN",
        # One run per sensor tick (EXTRACTION_SENSOR_MAX_FILES): each run costs a process
        # start (~2 s of CPU) and runs side by side contend for the cores (README "Performance").
        1000,
        "Most documents one run takes (sensor, schedules, backfills); fewer spread more",
        ge=1,
    )
    extraction: ExtractionSettings = ExtractionSettings()
    operations: OperationsSettings = OperationsSettings()

    @model_validator(mode="before")
    @classmethod
    def _inbox_in_data_dir(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("inbox"):
            data_dir = str(values.get("data_dir") or "data")
            # The drop folder is a local folder: beside the data, or here when that is on S3.
            inbox = Path("inbox") if is_object_storage_url(data_dir) else Path(data_dir) / "inbox"
            values = {**values, "inbox": inbox}
        return values

    @field_validator("data_dir", "inbox", mode="before")
    @classmethod
    def _folder_or_url(cls, value: Any) -> Path | str:
        text = str(value)
        return text.rstrip("/") if is_object_storage_url(text) else Path(text).absolute()

    @property
    def local_data_dir(self) -> Path | None:
        """The data dir when it is a local folder (None on object storage)."""
        return self.data_dir if isinstance(self.data_dir, Path) else None

    @property
    def local_inbox(self) -> Path | None:
        """The drop folder when it is a local folder (None when it is an S3 prefix)."""
        return self.inbox if isinstance(self.inbox, Path) else None

    @property
    def pdf_limits(self) -> PdfLimits:
        return PdfLimits(max_bytes=self.max_bytes, max_pages=self.max_pages)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **values: Any) -> Settings:
        env = os.environ if env is None else env
        settings: Settings = super().from_env(
            env,
            extraction=ExtractionSettings.from_env(env),
            operations=OperationsSettings.from_env(env),
            **values,
        )
        return settings


def declared_variables() -> dict[str, str]:
    """Every environment variable a setting reads, with its description (for docs and tests)."""
    variables = {}
    for model in (Settings, ExtractionSettings, OperationsSettings):
        for field in model.model_fields.values():
            variable = (field.json_schema_extra or {}).get("env")  # type: ignore[union-attr]
            if isinstance(variable, str):
                variables[variable] = field.description or ""
    return variables


def _explain(model: type[BaseModel], error: ValidationError) -> str:
    """The first problem, named by its environment variable."""
    problem = error.errors()[0]
    name = str(problem["loc"][0]) if problem["loc"] else ""
    field = model.model_fields.get(name)
    variable = (field.json_schema_extra or {}).get("env") if field else None  # type: ignore[union-attr]
    return f"{variable or name}: {problem['msg']}, not {problem.get('input')!r}"
