"""Resources: the data dir (registry, originals, records, tables) and the extraction model."""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg
from pydantic import BaseModel, Field

from extraction_pipeline.core.documents.pdf import PdfLimits
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.extraction.records import RecordStore
from extraction_pipeline.core.extraction.schemas import load_schema
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.settings import ExtractionSettings, Settings
from extraction_pipeline.core.store import ObjectStore
from extraction_pipeline.instance.stores import open_store

API_KEY_VARIABLE = "OPENAI_API_KEY"


class DocumentStoreResource(dg.ConfigurableResource):
    """Where originals, registrations, records and tables are stored (EXTRACTION_DATA_DIR)."""

    data_dir: str = Field(description=Settings.model_fields["data_dir"].description)
    max_pages: int = Field(
        default=PdfLimits.max_pages, description=Settings.model_fields["max_pages"].description
    )
    max_bytes: int = Field(
        default=PdfLimits.max_bytes, description=Settings.model_fields["max_bytes"].description
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> DocumentStoreResource:
        return cls(
            data_dir=str(settings.data_dir),
            max_pages=settings.max_pages,
            max_bytes=settings.max_bytes,
        )

    def object_store(self) -> ObjectStore:
        return open_store(self.data_dir)

    def registry(self) -> DocumentRegistry:
        return DocumentRegistry(self.object_store())

    def records(self) -> RecordStore:
        return RecordStore(self.object_store())

    def pdf_limits(self) -> PdfLimits:
        return PdfLimits(max_bytes=self.max_bytes, max_pages=self.max_pages)


class ExtractionAgentResource(dg.ConfigurableResource, ExtractionSettings):
    """The model the documents are extracted with, and how hard it may be driven.

    Its fields are `ExtractionSettings`' (declared once, in core). The API key is bound as
    `dg.EnvVar("OPENAI_API_KEY")`: Dagster resolves it in the run's process, so the key is never
    a value in the definitions, run config or event log. Left unset (a keyless deployment on
    the simulator, or an endpoint that needs none), the agent calls without one.
    """

    api_key: str | None = Field(
        default=None, description=f"The model API key, bound as EnvVar({API_KEY_VARIABLE!r})."
    )

    @classmethod
    def from_settings(
        cls, settings: ExtractionSettings, environ: Mapping[str, str] | None = None
    ) -> ExtractionAgentResource:
        environ = os.environ if environ is None else environ
        key = dg.EnvVar(API_KEY_VARIABLE) if environ.get(API_KEY_VARIABLE) else None
        return cls(**dict(settings), api_key=key)

    def settings(self) -> ExtractionSettings:
        return ExtractionSettings.model_validate(
            self.model_dump(include=set(ExtractionSettings.model_fields))
        )

    def agent_config_with_key(self) -> AgentConfig:
        """The agent's configuration, with the API key resolved in this (the run's) process."""
        return self.settings().agent_config(api_key=self.api_key)

    def output_schema(self) -> type[BaseModel]:
        return load_schema(self.schema_ref)
