"""Resources: the data dir (document registry, originals) as one configurable resource."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from extraction_pipeline.core.pdf import PdfLimits
from extraction_pipeline.core.registry import DocumentRegistry
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

    def pdf_limits(self) -> PdfLimits:
        return PdfLimits(max_bytes=self.max_bytes, max_pages=self.max_pages)
