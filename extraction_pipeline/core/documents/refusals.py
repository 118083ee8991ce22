"""Files of the drop folder that never become documents, and why (kept in the registry)."""

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class RefusalReason(enum.StrEnum):
    NOT_A_PDF_NAME = "not_a_pdf_name"
    FOLDER = "folder"
    SYMLINK_OUTSIDE_INBOX = "symlink_outside_inbox"
    BROKEN_SYMLINK = "broken_symlink"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    PERMISSION_DENIED = "permission_denied"
    TOO_LARGE = "too_large"


class Refusal(BaseModel):
    """A file of the drop folder that does not become a document, and why."""

    model_config = ConfigDict(frozen=True)

    file_name: str
    reason: RefusalReason
    message: str
    refused_at: datetime
