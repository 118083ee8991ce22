"""The one interface every stored byte goes through.

Everything durable that is not in Postgres lives in an `ObjectStore`: originals, registrations,
extracted records and tables. Names are `/`-separated relative paths. The local implementation
writes atomically (temporary file, then rename) so a crash never leaves half a file behind; an
object-storage implementation can replace it without touching callers (`put_if_absent` maps to a
conditional write, e.g. S3's `If-None-Match: *`).
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePosixPath
from typing import Protocol

# Stored data is readable like any written file (the process umask applies, as it does there).
_FILE_MODE = 0o644
S3_SCHEME = "s3://"


def is_object_storage_url(location: str) -> bool:
    """EXTRACTION_DATA_DIR names object storage (core.s3_store) rather than a folder."""
    return location.startswith(S3_SCHEME)


class ObjectStore(Protocol):
    """Bytes by name. Writes are atomic and last-writer-wins."""

    def put(self, name: str, data: bytes) -> None: ...

    def put_if_absent(self, name: str, data: bytes) -> bool:
        """Create the object unless it exists, atomically across processes; True when this call
        created it. Readers never see it partly written."""
        ...

    def get(self, name: str) -> bytes:
        """Return the object's bytes; raise `FileNotFoundError` when it does not exist."""
        ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> None:
        """Remove the object; nothing happens when it does not exist."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Names under `prefix` (a folder-like path), in no particular order."""
        ...

    def uri(self, name: str) -> str:
        """Where a person can find the object (a path or URL), for metadata and logs."""
        ...

    def lock(self, name: str) -> AbstractContextManager[None]:
        """An exclusive lock, across processes, for read-modify-write of shared objects."""
        ...


class LocalObjectStore:
    """An `ObjectStore` in a local directory (the data dir)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"invalid object name {name!r}")
        return self.root.joinpath(*relative.parts)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        temporary = self._write_temporary(path, data)
        try:
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def put_if_absent(self, name: str, data: bytes) -> bool:
        path = self._path(name)
        temporary = self._write_temporary(path, data)
        try:
            # link(2) fails when the name exists, and the linked file is already complete.
            os.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)
        return True

    def _write_temporary(self, path: Path, data: bytes) -> Path:
        # Created with the file's final mode (mkstemp's is owner-only, and a chmod is one more
        # call): creating files is most of what storing costs on a slow file system.
        temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            handle = os.open(temporary, flags, _FILE_MODE)
        except FileNotFoundError:  # the first object under this folder: make it, once
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(temporary, flags, _FILE_MODE)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary

    def get(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()

    def uri(self, name: str) -> str:
        return str(self._path(name).resolve())

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        path = self._path(f"locks/{name}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
