"""The drop folder a deployment names (EXTRACTION_INBOX): a local folder or an S3 prefix."""

from pathlib import Path

from extraction_pipeline.core.intake.inbox import InboxSource, LocalInbox
from extraction_pipeline.core.store import is_object_storage_url


def open_inbox(location: Path | str) -> InboxSource:
    """The drop folder at `location`: a local folder, or an s3:// prefix."""
    if is_object_storage_url(str(location)):
        from extraction_pipeline.core.intake.s3_inbox import S3Inbox  # obstore only when used

        return S3Inbox(str(location))
    return LocalInbox(Path(location))
