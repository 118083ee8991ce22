"""The simulator's state dir: files and batches written through to a folder, read back at start.

Layout: `files/<id>.json` (a `FileRecord`) beside `files/<id>.bin` (its bytes), and
`batches/<id>.json` (a `BatchRecord`). Every write goes to a temporary file in the same folder
and is renamed over the target, so a simulator killed mid-write (which is what restarting `dev`
does) leaves the old version or the new one, never half of one. The bytes are written before the
record that names them, so a record on disk always has its bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from extraction_pipeline.simulator.records import BatchRecord, FileRecord

logger = logging.getLogger(__name__)
Record = TypeVar("Record", bound=BaseModel)


class StateDir:
    """One simulator's folder of files and batches."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files = root / "files"
        self._batches = root / "batches"
        self._files.mkdir(parents=True, exist_ok=True)
        self._batches.mkdir(parents=True, exist_ok=True)

    def save_file(self, record: FileRecord, data: bytes) -> None:
        _write_atomically(self._files / f"{record.id}.bin", data)
        _write_atomically(self._files / f"{record.id}.json", record.model_dump_json().encode())

    def file_data(self, file_id: str) -> bytes | None:
        """The bytes of a file whose record was loaded or saved (callers check the id first)."""
        try:
            return (self._files / f"{file_id}.bin").read_bytes()
        except FileNotFoundError:
            return None

    def load_files(self) -> list[FileRecord]:
        records = _load_all(self._files, FileRecord)
        return [record for record in records if (self._files / f"{record.id}.bin").is_file()]

    def save_batch(self, record: BatchRecord) -> None:
        _write_atomically(self._batches / f"{record.id}.json", record.model_dump_json().encode())

    def load_batches(self) -> list[BatchRecord]:
        return _load_all(self._batches, BatchRecord)

    def clear_files(self) -> None:
        """Forget every file (only the names this layout writes are removed)."""
        _remove(self._files, "*.json", "*.bin")

    def clear_batches(self) -> None:
        _remove(self._batches, "*.json")


def _remove(folder: Path, *patterns: str) -> None:
    for pattern in (*patterns, ".*.tmp"):
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)


def _load_all(folder: Path, model: type[Record]) -> list[Record]:
    records: list[Record] = []
    for path in sorted(folder.glob("*.json")):
        try:
            records.append(model.model_validate_json(path.read_bytes()))
        except (OSError, ValidationError) as error:
            # One unreadable record must not cost the others; say which and go on.
            logger.warning("simulator state: skipping %s: %s", path, error)
    return records


def _write_atomically(path: Path, data: bytes) -> None:
    # The temporary file sits in the target's folder so the rename never crosses file systems.
    # No fsync: this guards against the process being killed, not against power loss.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
