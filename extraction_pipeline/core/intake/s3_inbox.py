"""A drop folder on S3-compatible object storage (EXTRACTION_INBOX=s3://bucket/prefix).

Objects directly under the prefix are the folder's files (deeper keys, like subfolders, are not
looked into), planned by the same cursor as a local folder with the object's LastModified as its
change time. Two things differ, and the cursor allows for both by trailing the newest change by
LAG_SECONDS rather than the settle time: LastModified comes from the server's clock, in whole
seconds on S3; and for a multipart upload it is when the upload began, not when the object
appeared. An object is visible only once complete, so nothing is read half-written; reading
checks the ETag listed, so an object replaced meanwhile is taken on a later tick.

Endpoint and credentials come from the usual AWS variables, read by obstore (see
core.s3_store). Listing costs one request per 1,000 objects per tick, so there is no watch
between ticks: an upload is taken at the next one (EXTRACTION_SENSOR_INTERVAL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, PreconditionError
from obstore.store import S3Store

from extraction_pipeline.core.documents.refusals import RefusalReason
from extraction_pipeline.core.intake.inbox import (
    InboxEntry,
    InboxFileChanged,
    InboxFileRefused,
    is_hidden,
)
from extraction_pipeline.core.store import S3_SCHEME, is_object_storage_url

if TYPE_CHECKING:
    from obstore import GetOptions

# Covers the server's whole-second times, clock skew between it and the daemon, and multipart
# uploads that take up to this long. The cursor keeps the names seen in this window.
LAG_SECONDS = 60.0


class S3Inbox:
    """An `InboxSource` on an S3 prefix."""

    lag_seconds = LAG_SECONDS

    def __init__(self, url: str) -> None:
        if not is_object_storage_url(url) or not url[len(S3_SCHEME) :].strip("/"):
            raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
        self.location = url.rstrip("/")
        self._store = S3Store.from_url(self.location)

    def scan(self) -> list[InboxEntry]:
        listing = obstore.list_with_delimiter(self._store)
        entries = []
        for meta in listing["objects"]:
            name = meta["path"]
            if is_hidden(name):
                continue
            changed_ns = int(meta["last_modified"].timestamp() * 1e9)
            entries.append(
                InboxEntry(name, meta["size"], changed_ns, changed_ns, version=meta["e_tag"] or "")
            )
        return entries

    def read(self, entry: InboxEntry, max_bytes: int) -> bytes:
        if entry.size_bytes > max_bytes:
            raise InboxFileRefused(
                RefusalReason.TOO_LARGE,
                f"the file is {entry.size_bytes:,} bytes; the limit is {max_bytes:,} "
                "(EXTRACTION_MAX_BYTES): it was not read",
            )
        options: GetOptions = {"if_match": entry.version} if entry.version else {}
        try:
            data = bytes(obstore.get(self._store, entry.name, options=options).bytes())
        except PreconditionError as error:
            raise InboxFileChanged("it was replaced after it was listed") from error
        except PermissionDeniedError as error:
            raise PermissionError(13, "access denied by the object store") from error
        except BaseError as error:  # a passing failure, perhaps: the tick tries it again
            raise OSError(f"the object store failed: {type(error).__name__}") from error
        if len(data) != entry.size_bytes:
            raise InboxFileChanged(f"{len(data):,} bytes read, {entry.size_bytes:,} listed")
        return data

    def version(self) -> int | None:
        return None  # a listing costs a request: no watch between ticks

    def drop(self, name: str, data: bytes) -> None:
        obstore.put(self._store, name, data)
