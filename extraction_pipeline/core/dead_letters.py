"""Dead letters: documents that failed for good and need a person, stored in the data dir."""

from __future__ import annotations

import io
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from extraction_pipeline.core.store import ObjectStore

PREFIX = "dead_letters"
TABLE_NAME = "tables/dead_letters.parquet"
SCHEMA = pa.schema(
    [
        pa.field("document_key", pa.string()),
        pa.field("file_name", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("error_kind", pa.string()),
        pa.field("error", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


class DeadLetter(BaseModel):
    document_key: str
    file_name: str
    run_id: str
    error_kind: str
    error: str
    attempts: int
    recorded_at: datetime


class DeadLetterStore:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def record(self, letter: DeadLetter) -> None:
        self.store.put(f"{PREFIX}/{letter.document_key}.json", letter.model_dump_json().encode())

    def clear(self, document_key: str) -> bool:
        """Forget a document that has since been extracted; True when it was a dead letter."""
        name = f"{PREFIX}/{document_key}.json"
        if not self.store.exists(name):
            return False
        self.store.delete(name)
        return True

    def all(self) -> list[DeadLetter]:
        return sorted(
            (
                DeadLetter.model_validate_json(self.store.get(name))
                for name in self.store.list(PREFIX)
            ),
            key=lambda letter: letter.recorded_at,
        )

    def write_table(self) -> int:
        """Rewrite `tables/dead_letters.parquet` from the records (a short list by nature)."""
        rows = [letter.model_dump() for letter in self.all()]
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buffer)
        self.store.put(TABLE_NAME, buffer.getvalue())
        return len(rows)
