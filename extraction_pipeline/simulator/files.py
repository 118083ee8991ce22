"""The Files API's store: uploads and batch result files, in memory or written through to disk."""

from __future__ import annotations

import time

from extraction_pipeline.simulator.records import FileRecord
from extraction_pipeline.simulator.storage import StateDir
from extraction_pipeline.simulator.wire import new_id

FILE_PURPOSES = frozenset(
    {"assistants", "batch", "batch_output", "fine-tune", "vision", "user_data", "evals"}
)


class FileStore:
    """Files by id. With a `StateDir` the bytes live only on disk (batch inputs can be large);
    without one, everything is in memory."""

    def __init__(self, storage: StateDir | None = None) -> None:
        self._storage = storage
        self._records: dict[str, FileRecord] = {}
        self._contents: dict[str, bytes] = {}
        if storage is not None:
            self._records = {record.id: record for record in storage.load_files()}

    def add(self, filename: str, purpose: str, data: bytes) -> FileRecord:
        record = FileRecord(
            id=new_id("file", self._records),
            filename=filename,
            purpose=purpose,
            bytes=len(data),
            created_at=int(time.time()),
        )
        if self._storage is not None:
            self._storage.save_file(record, data)
        else:
            self._contents[record.id] = data
        self._records[record.id] = record
        return record

    def get(self, file_id: str) -> FileRecord | None:
        return self._records.get(file_id)

    def data(self, file_id: str) -> bytes | None:
        if file_id not in self._records:
            return None
        if self._storage is not None:
            return self._storage.file_data(file_id)
        return self._contents.get(file_id)

    def clear(self) -> None:
        """Forget every file (on disk too)."""
        self._records.clear()
        self._contents.clear()
        if self._storage is not None:
            self._storage.clear_files()
