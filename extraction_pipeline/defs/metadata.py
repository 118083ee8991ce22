"""Dagster metadata built from core records: what a user reads in the UI per document and table."""

from typing import Any

import dagster as dg

from extraction_pipeline.core.extraction.records import ExtractionRecord
from extraction_pipeline.core.tables.layout import TableLayout


def column_schema(layout: TableLayout) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(column.name, str(column.type), description=column.description or None)
            for column in layout.columns
        ]
    )


def outcome_metadata(outcome: ExtractionRecord) -> dict[str, Any]:
    """Per-document metadata of an extraction (materialisation or failure observation)."""
    call = outcome.call
    metadata: dict[str, Any] = {
        "status": outcome.status,
        "file_name": outcome.file_name,
        "sha256": outcome.sha256,
        "cache_hit": outcome.cache_hit,
    }
    if outcome.record is not None:
        metadata["record"] = dg.MetadataValue.json(outcome.record)
    if call is not None:
        metadata.update(
            {
                "model": call.model,
                "input_tokens": call.input_tokens,
                "cached_input_tokens": call.cached_input_tokens,
                "output_tokens": call.output_tokens,
                "cost_usd": dg.MetadataValue.float(float(call.cost_usd or 0.0)),
                "latency_seconds": dg.MetadataValue.float(call.latency_seconds),
                "attempts": call.attempts,
                "request_id": call.request_id or "",
                "api_mode": call.api_mode,
                "input_mode": call.input_mode,
            }
        )
    if outcome.pages is not None:
        metadata["pages"] = outcome.pages
    if outcome.findings:
        metadata["findings"] = dg.MetadataValue.md(
            "\n".join(f"- **{f.check}**: {f.message}" for f in outcome.findings)
        )
    if outcome.review_reason:
        metadata["review_reason"] = outcome.review_reason
    if outcome.error_kind:
        metadata["error_kind"] = outcome.error_kind
        metadata["error_message"] = outcome.error_message or ""
        metadata["retryable"] = bool(outcome.retryable)
    return metadata


def markdown_preview(rows: list[dict[str, Any]], max_columns: int = 8) -> str:
    if not rows:
        return "*(empty)*"
    columns = list(rows[0])[:max_columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "\\|")[:40] for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
