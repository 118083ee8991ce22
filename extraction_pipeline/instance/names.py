"""Asset keys used across the wiring (kept apart so modules can share them without cycles)."""

import dagster as dg

SOURCE_KEY = dg.AssetKey("source_document")
EXTRACTION_KEY = dg.AssetKey("extraction")
TABLE_NAMES = ("documents", "invoices", "invoice_line_items", "review_queue")
