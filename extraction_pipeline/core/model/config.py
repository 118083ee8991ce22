"""Configuration of the extraction agent, declared once and validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from extraction_pipeline.core.model.costs import PriceTable
from extraction_pipeline.core.model.types import ApiMode, InputMode

# Bump when the instructions or message layout change: it is part of every cache key.
PROMPT_VERSION = "invoice-extract-v1"
DEFAULT_MODEL = "gpt-4.1-mini"


@dataclass(frozen=True)
class AgentConfig:
    """How the agent talks to the model.

    - `api_mode`: "responses" (OpenAI Responses API) or "chat" (Chat Completions, which any
      OpenAI-compatible server such as vLLM, Ollama or LM Studio speaks; set `base_url`).
    - `input_mode`: "auto" sends the text layer when the document has one and the PDF file
      otherwise; "text", "pdf" and "images" (pages rendered at `image_dpi`, grayscale PNG) force
      one shape.
    - `temperature`: None omits it, which reasoning models (gpt-5 family) require.
    - `max_retries`: retries after the first attempt for transient failures; the agent retries
      itself (SDK retries off) so every attempt is counted. A server-requested wait above
      `max_retry_wait_seconds` is not waited out: the error is raised for the orchestrator.
    - `rpm` / `tpm`: client-side limits; 0 or None means unlimited.
    """

    model: str = DEFAULT_MODEL
    api_mode: ApiMode = "responses"
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    input_mode: InputMode = "auto"
    image_dpi: int = 150
    max_concurrency: int = 8
    rpm: int | None = None
    tpm: int | None = None
    timeout_seconds: float = 120.0
    max_retries: int = 4
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    max_retry_wait_seconds: float = 120.0
    max_output_tokens: int = 4096
    temperature: float | None = 0.0
    prompt_version: str = PROMPT_VERSION
    prices: PriceTable = field(default_factory=PriceTable)
    # Responses API only: do not keep documents on the provider side after answering.
    store: bool = False

    def __post_init__(self) -> None:
        if self.api_mode not in get_args(ApiMode):
            raise ValueError(f"api_mode must be one of {get_args(ApiMode)}, not {self.api_mode!r}")
        if self.input_mode not in get_args(InputMode):
            raise ValueError(
                f"input_mode must be one of {get_args(InputMode)}, not {self.input_mode!r}"
            )
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if self.max_output_tokens < 1:
            raise ValueError("max_output_tokens must be at least 1")
        if not 36 <= self.image_dpi <= 600:
            raise ValueError("image_dpi must be between 36 and 600")
