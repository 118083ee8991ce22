"""Deployment settings, declared once and read from the environment when asked, never at import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from extraction_pipeline.core.pdf import PdfLimits


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


@dataclass(frozen=True)
class Settings:
    """Where documents come from and go, and how intake behaves. See README, "Configuration"."""

    data_dir: Path
    inbox: Path
    sensor_interval_seconds: int = 5
    sensor_max_files: int = 100
    settle_seconds: float = 2.0
    pdf_limits: PdfLimits = field(default_factory=PdfLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("EXTRACTION_DATA_DIR") or "data").absolute()
        inbox = Path(env.get("EXTRACTION_INBOX") or data_dir / "inbox").absolute()
        return cls(
            data_dir=data_dir,
            inbox=inbox,
            sensor_interval_seconds=_int(env, "EXTRACTION_SENSOR_INTERVAL", 5, minimum=1),
            sensor_max_files=_int(env, "EXTRACTION_SENSOR_MAX_FILES", 100, minimum=1),
            settle_seconds=_float(env, "EXTRACTION_SETTLE_SECONDS", 2.0),
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
