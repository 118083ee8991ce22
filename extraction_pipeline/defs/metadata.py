"""Dagster metadata built from core records: what a user reads in the UI per document and table."""

from typing import Any

import dagster as dg

from extraction_pipeline.core.tables.layout import TableLayout


def column_schema(layout: TableLayout) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(column.name, str(column.type), description=column.description or None)
            for column in layout.columns
        ]
    )


def markdown_preview(rows: list[dict[str, Any]], max_columns: int = 8) -> str:
    if not rows:
        return "*(empty)*"
    columns = list(rows[0])[:max_columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(c, "")).replace("|", "\\|")[:40] for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
