"""EXTRACTION_INBOX=s3://...: the drop folder as an S3 prefix on a real S3-compatible server
(SeaweedFS on loopback), listed and read through the same plan and cursor as a local folder."""

import time

import obstore
import pytest
from obstore.store import S3Store

from extraction_pipeline.core.documents.refusals import RefusalReason
from extraction_pipeline.core.intake.inbox import (
    InboxFileChanged,
    InboxFileRefused,
    IntakeCursor,
    plan_tick,
)
from extraction_pipeline.core.intake.s3_inbox import LAG_SECONDS, S3Inbox
from extraction_pipeline.core.intake.sources import open_inbox
from extraction_pipeline_tests.pdfs import good_pdf


@pytest.fixture
def inbox(s3_data_url: str) -> S3Inbox:
    source = open_inbox(f"{s3_data_url}/inbox/")
    assert isinstance(source, S3Inbox)
    return source


def tick(inbox: S3Inbox, cursor: IntakeCursor, max_files: int = 100):
    return plan_tick(inbox, cursor, settle_seconds=0, max_files=max_files, watch_seconds=3.0)


def test_objects_directly_under_the_prefix_are_listed_and_read(inbox: S3Inbox) -> None:
    inbox.drop("a.pdf", good_pdf())
    inbox.drop("notes.txt", b"hello")
    inbox.drop("deeper/b.pdf", good_pdf())  # like a subfolder: not looked into
    inbox.drop(".hidden.pdf", good_pdf())
    inbox.drop("upload.pdf.part", good_pdf())
    started = time.monotonic()
    plan = tick(inbox, IntakeCursor())
    assert time.monotonic() - started < 2.5  # no watch: a listing is a paid request
    assert [entry.name for entry in plan.ready] == ["a.pdf"]
    assert [(r.file_name, r.reason) for r in plan.refused] == [
        ("notes.txt", RefusalReason.NOT_A_PDF_NAME)
    ]
    (entry,) = plan.ready
    assert entry.version and entry.size_bytes == len(good_pdf())
    assert inbox.read(entry, 10**6) == good_pdf()


def test_the_cursor_takes_each_upload_once_and_a_new_upload_again(inbox: S3Inbox) -> None:
    inbox.drop("a.pdf", good_pdf())
    first = tick(inbox, IntakeCursor())
    assert [e.name for e in first.ready] == ["a.pdf"]
    # The watermark trails by LAG_SECONDS: the name is kept in the cursor meanwhile.
    assert first.cursor.watermark_ns <= time.time_ns() - int(LAG_SECONDS * 1e9) + int(1e9)
    assert ("a.pdf", first.ready[0].ctime_ns) in first.cursor.taken
    assert tick(inbox, first.cursor).ready == ()
    inbox.drop("b.pdf", good_pdf())
    second = tick(inbox, first.cursor)
    assert [e.name for e in second.ready] == ["b.pdf"]
    time.sleep(1.1)  # S3's times are whole seconds: a re-upload a second later is new
    inbox.drop("a.pdf", good_pdf() + b"\n% again")
    third = tick(inbox, second.cursor)
    assert [e.name for e in third.ready] == ["a.pdf"]


def test_a_tick_over_its_cap_leaves_the_rest_for_the_next(inbox: S3Inbox) -> None:
    for index in range(5):
        inbox.drop(f"doc-{index}.pdf", good_pdf() + str(index).encode())
    first = tick(inbox, IntakeCursor(), max_files=3)
    second = tick(inbox, first.cursor, max_files=3)
    taken = [e.name for e in first.ready] + [e.name for e in second.ready]
    assert sorted(taken) == [f"doc-{index}.pdf" for index in range(5)]
    assert tick(inbox, second.cursor).ready == ()


def test_a_read_refuses_an_object_too_large_and_notices_a_replaced_or_removed_one(
    inbox: S3Inbox,
) -> None:
    inbox.drop("a.pdf", good_pdf())
    (entry,) = tick(inbox, IntakeCursor()).ready
    with pytest.raises(InboxFileRefused) as refused:
        inbox.read(entry, max_bytes=10)
    assert refused.value.reason is RefusalReason.TOO_LARGE
    inbox.drop("a.pdf", good_pdf() + b"% replaced")
    with pytest.raises(InboxFileChanged):  # not the object listed: its ETag changed
        inbox.read(entry, 10**6)
    (fresh,) = inbox.scan()
    assert inbox.read(fresh, 10**6).endswith(b"% replaced")
    obstore.delete(S3Store.from_url(inbox.location), "a.pdf")
    with pytest.raises(FileNotFoundError):  # vanished: the tick logs it and goes on
        inbox.read(fresh, 10**6)
