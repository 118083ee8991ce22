"""Settings of the model simulator: latency, injected faults, batch pacing, cache accounting."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from extraction_pipeline.simulator.faults import FaultMixName, FaultRule

# The real API's only completion window, "24h".
BATCH_WINDOW_SECONDS = 24 * 3600.0
DEFAULT_MODELS = ("gpt-4.1-mini", "gpt-4.1", "gpt-4.1-nano", "gpt-5-mini", "gpt-5.6-luna")


class SimulatorConfig(BaseModel):
    """Knobs of a simulator instance; the control endpoint `POST /_sim/settings` changes them live.

    - `latency_seconds` + uniform(0, `jitter_seconds`): delay before each model answer.
    - `batch_phase_seconds`: time a batch spends in each of validating, in_progress, finalizing
      (and cancelling) before moving on; its lines are answered one by one across in_progress.
    - `batch_expire_seconds`: a batch not completed this long after its creation expires (the
      real API's 24 h window), keeping the lines done by then. Both batch settings are fixed
      into a batch when it is created.
    - `state_dir`: a folder that files and batches are written through to and loaded from at
      start, so a restarted simulator still has them (None: in memory only).
    - `cached_input_tokens`: reported as cached (capped at the input tokens), to exercise the
      cached-input price.
    - `seed`: seeds jitter and fault rates, so runs are reproducible.
    - `fault_mix`: a named mix (`FAULT_MIXES`) whose rules follow `faults`.
    """

    model_config = ConfigDict(extra="forbid")

    latency_seconds: float = Field(default=0.0, ge=0)
    jitter_seconds: float = Field(default=0.0, ge=0)
    faults: list[FaultRule] = Field(default_factory=list)
    fault_mix: FaultMixName | None = None
    batch_phase_seconds: float = Field(default=0.2, ge=0)
    batch_expire_seconds: float = Field(default=BATCH_WINDOW_SECONDS, gt=0)
    state_dir: str | None = None
    cached_input_tokens: int = Field(default=0, ge=0)
    seed: int = 0
    models: tuple[str, ...] = DEFAULT_MODELS


class SimulatorSettings(BaseModel):
    """A partial update of the live settings (control endpoint body); None leaves a value as is.

    `fault_mix` replaces the live fault rules with that mix (as `POST /_sim/faults` would);
    `seed` starts the fault draws and the jitter afresh from that seed.
    """

    model_config = ConfigDict(extra="forbid")

    fault_mix: FaultMixName | None = None
    seed: int | None = None

    latency_seconds: float | None = Field(default=None, ge=0)
    jitter_seconds: float | None = Field(default=None, ge=0)
    batch_phase_seconds: float | None = Field(default=None, ge=0)
    batch_expire_seconds: float | None = Field(default=None, gt=0)
    cached_input_tokens: int | None = Field(default=None, ge=0)
