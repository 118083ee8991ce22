"""Deployment settings, declared once and read from the environment when asked, never at import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from extraction_pipeline.core.documents.pdf import PdfLimits
from extraction_pipeline.core.model.config import DEFAULT_MODEL, AgentConfig
from extraction_pipeline.core.model.costs import load_price_table


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


@dataclass(frozen=True)
class ExtractionSettings:
    """How documents are extracted: model, schema, concurrency and limits."""

    model: str = DEFAULT_MODEL
    api_mode: str = "responses"
    input_mode: str = "auto"
    schema: str = "invoice"
    base_url: str | None = None
    max_concurrency: int = 8
    rpm: int = 0
    tpm: int = 0
    timeout_seconds: float = 120.0
    max_retries: int = 4
    prices: str | None = None
    step_retry_delay_seconds: float = 15.0
    # On a stop (Ctrl-C of `dev`, run termination), calls already sent get this long to answer,
    # so what was paid for is stored; the rest are not sent.
    stop_grace_seconds: float = 15.0

    def agent_config(self, api_key: str | None) -> AgentConfig:
        return AgentConfig(
            model=self.model,
            api_mode=self.api_mode,  # type: ignore[arg-type]  # validated by AgentConfig
            input_mode=self.input_mode,  # type: ignore[arg-type]
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
    def from_env(cls, env: Mapping[str, str]) -> ExtractionSettings:
        settings = cls(
            model=env.get("EXTRACTION_MODEL") or DEFAULT_MODEL,
            api_mode=env.get("EXTRACTION_API") or "responses",
            input_mode=env.get("EXTRACTION_INPUT") or "auto",
            schema=env.get("EXTRACTION_SCHEMA") or "invoice",
            base_url=env.get("OPENAI_BASE_URL") or None,
            max_concurrency=_int(env, "EXTRACTION_MAX_CONCURRENCY", 8, minimum=1),
            rpm=_int(env, "EXTRACTION_RPM", 0),
            tpm=_int(env, "EXTRACTION_TPM", 0),
            timeout_seconds=_float(env, "EXTRACTION_TIMEOUT", 120.0),
            max_retries=_int(env, "EXTRACTION_MAX_RETRIES", 4),
            prices=env.get("EXTRACTION_PRICES") or None,
            step_retry_delay_seconds=_float(env, "EXTRACTION_STEP_RETRY_DELAY", 15.0),
            stop_grace_seconds=_float(env, "EXTRACTION_STOP_GRACE_SECONDS", 15.0),
        )
        try:
            settings.agent_config(api_key=None)
        except ValueError as error:
            raise SettingsError(f"extraction settings: {error}") from error
        return settings


@dataclass(frozen=True)
class OperationsSettings:
    """Schedules, retries, dead letters and notifications."""

    nightly_cron: str = "0 2 * * *"
    retry_cron: str = "0 * * * *"
    timezone: str = "UTC"
    max_attempts: int = 3
    max_runs_per_tick: int = 20
    webhook_url: str | None = None
    notify_success: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperationsSettings:
        return cls(
            nightly_cron=env.get("EXTRACTION_NIGHTLY_CRON") or "0 2 * * *",
            retry_cron=env.get("EXTRACTION_RETRY_CRON") or "0 * * * *",
            timezone=env.get("EXTRACTION_TIMEZONE") or "UTC",
            max_attempts=_int(env, "EXTRACTION_MAX_ATTEMPTS", 3, minimum=1),
            max_runs_per_tick=_int(env, "EXTRACTION_SCHEDULE_MAX_RUNS", 20, minimum=1),
            webhook_url=env.get("EXTRACTION_WEBHOOK_URL") or None,
            notify_success=(env.get("EXTRACTION_NOTIFY_SUCCESS") or "").lower()
            in ("1", "true", "yes"),
        )


@dataclass(frozen=True)
class Settings:
    """Where documents come from and go, and how intake behaves. See README, "Configuration"."""

    data_dir: Path
    inbox: Path
    sensor_interval_seconds: int = 5
    sensor_max_files: int = 200
    settle_seconds: float = 1.0
    pdf_limits: PdfLimits = field(default_factory=PdfLimits)
    extraction: ExtractionSettings = field(default_factory=ExtractionSettings)
    operations: OperationsSettings = field(default_factory=OperationsSettings)
    tables_interval_seconds: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("EXTRACTION_DATA_DIR") or "data").absolute()
        inbox = Path(env.get("EXTRACTION_INBOX") or data_dir / "inbox").absolute()
        return cls(
            data_dir=data_dir,
            inbox=inbox,
            sensor_interval_seconds=_int(env, "EXTRACTION_SENSOR_INTERVAL", 5, minimum=1),
            sensor_max_files=_int(env, "EXTRACTION_SENSOR_MAX_FILES", 200, minimum=1),
            settle_seconds=_float(env, "EXTRACTION_SETTLE_SECONDS", 1.0),
            extraction=ExtractionSettings.from_env(env),
            operations=OperationsSettings.from_env(env),
            tables_interval_seconds=_int(env, "EXTRACTION_TABLES_INTERVAL", 10, minimum=1),
            pdf_limits=PdfLimits(
                max_bytes=_int(env, "EXTRACTION_MAX_BYTES", PdfLimits.max_bytes, minimum=1),
                max_pages=_int(env, "EXTRACTION_MAX_PAGES", PdfLimits.max_pages, minimum=1),
            ),
        )


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative, not {value}")
    return value
