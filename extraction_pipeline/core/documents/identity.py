"""Document identity: partition keys derived from a readable file name and the content hash."""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePath

KEY_HASH_CHARS = 12
MAX_SLUG_CHARS = 60
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Dagster's UI reads "..." as a range and a leading "." hides files; keep dots single and inside.
_DOTS = re.compile(r"\.{2,}")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def slugify(file_name: str) -> str:
    """A readable, selection-safe slug of a file name without its extension."""
    stem = PurePath(file_name).stem
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = _DOTS.sub(".", _UNSAFE.sub("-", ascii_stem)).strip("-._")
    return slug[:MAX_SLUG_CHARS].rstrip("-._").lower() or "document"


def document_key(file_name: str, sha256: str) -> str:
    """The partition key of a document: `<slug>-<first 12 hex of its SHA-256>`.

    Only `[A-Za-z0-9._-]` appears, so keys survive selection, ranges and URLs in the Dagster UI.
    """
    return f"{slugify(file_name)}-{sha256[:KEY_HASH_CHARS]}"


def is_valid_document_key(key: str) -> bool:
    return bool(KEY_PATTERN.match(key)) and ".." not in key


def display_name(file_name: str) -> str:
    """The file name as valid Unicode, to store, log and show.

    Linux file names are bytes; Python keeps the bytes that are not UTF-8 as lone surrogates,
    which JSON, Postgres and terminals refuse. They become U+FFFD here; the file itself is still
    opened by its real name.
    """
    try:
        raw = file_name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = file_name.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")
