"""Resources: the data dir (registry, originals, records, tables) and the extraction model."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import dagster as dg
from pydantic import BaseModel, Field

from extraction_pipeline.core.documents.pdf import PdfLimits
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.extraction.records import RecordStore
from extraction_pipeline.core.extraction.schemas import load_schema
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.settings import ExtractionSettings
from extraction_pipeline.core.store import LocalObjectStore, ObjectStore


class DocumentStoreResource(dg.ConfigurableResource):
    """Where originals, registrations, records and tables are stored (EXTRACTION_DATA_DIR)."""

    data_dir: str = Field(description="Root of the stored data (EXTRACTION_DATA_DIR).")
    max_pages: int = Field(default=PdfLimits.max_pages, description="EXTRACTION_MAX_PAGES")
    max_bytes: int = Field(default=PdfLimits.max_bytes, description="EXTRACTION_MAX_BYTES")

    def object_store(self) -> ObjectStore:
        return LocalObjectStore(Path(self.data_dir))

    def registry(self) -> DocumentRegistry:
        return DocumentRegistry(self.object_store())

    def records(self) -> RecordStore:
        return RecordStore(self.object_store())

    def pdf_limits(self) -> PdfLimits:
        return PdfLimits(max_bytes=self.max_bytes, max_pages=self.max_pages)


class ExtractionAgentResource(dg.ConfigurableResource):
    """The model the documents are extracted with, and how hard it may be driven.

    The API key is read from the environment variable named by `api_key_env_var` when a run
    calls the model, so it is never stored in the definitions, run config or event log, and runs
    that do not call the model (e.g. `source_job`) do not need it.
    """

    model: str = Field(description="EXTRACTION_MODEL")
    api_mode: str = Field(description="EXTRACTION_API: responses or chat")
    input_mode: str = Field(description="EXTRACTION_INPUT: auto, text, pdf or images")
    schema_ref: str = Field(description="EXTRACTION_SCHEMA: 'invoice' or 'package.module:Model'")
    base_url: str | None = Field(default=None, description="OPENAI_BASE_URL")
    api_key_env_var: str = Field(
        default="OPENAI_API_KEY", description="Environment variable holding the API key."
    )
    max_concurrency: int = Field(description="EXTRACTION_MAX_CONCURRENCY, per pool slot")
    rpm: int = Field(default=0, description="EXTRACTION_RPM, per pool slot; 0: unlimited")
    tpm: int = Field(default=0, description="EXTRACTION_TPM, per pool slot; 0: unlimited")
    timeout_seconds: float = Field(description="EXTRACTION_TIMEOUT")
    max_retries: int = Field(description="EXTRACTION_MAX_RETRIES")
    prices: str | None = Field(default=None, description="EXTRACTION_PRICES: JSON or a path")
    step_retry_delay_seconds: float = Field(description="EXTRACTION_STEP_RETRY_DELAY")
    stop_grace_seconds: float = Field(
        default=15.0, description="EXTRACTION_STOP_GRACE_SECONDS: in-flight calls on a stop"
    )

    # The fields mirror ExtractionSettings (shown in the UI's resource page), but for `schema`,
    # a name pydantic models reserve.
    @classmethod
    def from_settings(cls, settings: ExtractionSettings) -> ExtractionAgentResource:
        values = dataclasses.asdict(settings)
        values["schema_ref"] = values.pop("schema")
        return cls(**values)

    def settings(self) -> ExtractionSettings:
        values = self.model_dump(exclude={"api_key_env_var"})
        values["schema"] = values.pop("schema_ref")
        return ExtractionSettings(**values)

    def agent_config(self) -> AgentConfig:
        return self.settings().agent_config(api_key=os.environ.get(self.api_key_env_var))

    def schema(self) -> type[BaseModel]:
        return load_schema(self.schema_ref)
