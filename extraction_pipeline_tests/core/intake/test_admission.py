"""take_documents on a drop folder of hostile and broken input beside good files."""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from extraction_pipeline.core.documents.pdf import sha256_hex
from extraction_pipeline.core.documents.refusals import RefusalReason
from extraction_pipeline.core.documents.registry import DocumentRegistry, original_name
from extraction_pipeline.core.intake.admission import IntakeDecision, take_documents
from extraction_pipeline.core.intake.inbox import (
    InboxEntry,
    IntakeCursor,
    LocalInbox,
    plan_intake,
    scan_inbox,
)
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline_tests.hostile import (
    LATIN1_NAME,
    LIMITS,
    LONG_NAME,
    UNICODE_NAME,
    Expected,
    drop_hostile_files,
)
from extraction_pipeline_tests.pdfs import good_pdf

HOSTILE_NAMES = [
    "good 1.pdf",
    "good, with commas #2.pdf",
    UNICODE_NAME,
    LONG_NAME,
    LATIN1_NAME.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
    "twin a.pdf",
    "twin b.pdf",
    "link to good 1.pdf",
    "empty.pdf",
    "text.pdf",
    "truncated.pdf",
    "garbage after header.pdf",
    "encrypted.pdf",
    "four pages.pdf",
    "no pages.pdf",
    "big.pdf",
    "notes.txt",
    "folder.pdf",
    "passwd.pdf",
    "dangling.pdf",
    "pipe.pdf",
    "no permission.pdf",
]
# What the data dir may hold: content hashes and slugs, never a path made of a raw file name.
STORED_NAME = re.compile(
    r"^(originals/sha256/[0-9a-f]{2}/[0-9a-f]{64}\.pdf"
    r"|registry/sha256/[0-9a-f]{2}/[0-9a-f]{64}"
    r"|registry/(documents|refusals)/[a-z0-9]([a-z0-9.-]{0,58}[a-z0-9])?-[0-9a-f]{12}\.json"
    r"|locks/[a-z-]+\.lock)$"
)


@dataclass(frozen=True)
class HostileTick:
    root: Path
    expected: dict[str, Expected]
    decision: IntakeDecision
    registry: DocumentRegistry


def take(
    inbox: Path,
    registry: DocumentRegistry,
    cursor: IntakeCursor | None = None,
    source: LocalInbox | None = None,
) -> IntakeDecision:
    listing = scan_inbox(inbox)
    plan = plan_intake(listing, cursor or IntakeCursor(), time.time_ns(), 0, max_files=100)
    return take_documents(plan, source or LocalInbox(inbox), registry, lambda key: False, LIMITS)


def outcomes(decision: IntakeDecision, registry: DocumentRegistry) -> dict[str, Expected]:
    """Each file's outcome in a tick, in the terms of `Expected`."""

    def name_of(key: str) -> str:
        record = registry.get(key)
        assert record is not None
        return record.file_name

    found = {name_of(key): Expected("new", key) for key in decision.new_keys}
    found |= {name_of(key): Expected("unreadable", error) for key, error in decision.unreadable}
    found |= {name: Expected("duplicate", key) for name, key in decision.duplicates}
    found |= {
        r.file_name: Expected("refused", f"{r.reason.value}: {r.message}") for r in decision.refused
    }
    return found


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileTick:
    root = tmp_path_factory.mktemp("hostile")
    inbox = root / "inbox"
    inbox.mkdir()
    expected = drop_hostile_files(inbox, root / "outside")
    registry = DocumentRegistry(LocalObjectStore(root / "data"))
    return HostileTick(root, expected, take(inbox, registry), registry)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_each_file_gets_its_specific_outcome_and_reason(hostile: HostileTick, name: str) -> None:
    if name not in hostile.expected:
        pytest.skip("root reads files whatever their mode says; see the failing-reader test")
    assert outcomes(hostile.decision, hostile.registry)[name] == hostile.expected[name]


def test_nothing_is_dropped_silently_and_the_tick_completes(hostile: HostileTick) -> None:
    decision = hostile.decision
    assert outcomes(decision, hostile.registry).keys() == hostile.expected.keys()
    assert (decision.known, decision.vanished, decision.growing, decision.retrying) == (
        (),
        (),
        (),
        (),
    )
    assert decision.cursor.retry == frozenset()
    again = take(hostile.root / "inbox", hostile.registry, decision.cursor)
    assert again.summary() == "no new files"


def test_refusals_are_recorded_in_the_data_dir(hostile: HostileTick) -> None:
    recorded = {r.file_name: f"{r.reason.value}: {r.message}" for r in hostile.registry.refusals()}
    assert recorded == {
        name: expected.detail
        for name, expected in hostile.expected.items()
        if expected.outcome == "refused"
    }


def test_no_file_name_reaches_a_stored_path_and_links_out_are_not_read(
    hostile: HostileTick,
) -> None:
    data = hostile.root / "data"
    stored = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
    assert [name for name in stored if not STORED_NAME.match(name)] == []
    secret = (hostile.root / "outside" / "secret.pdf").read_bytes()
    assert not hostile.registry.store.exists(original_name(sha256_hex(secret)))
    inner = good_pdf(9)  # inside the folder named folder.pdf
    assert not hostile.registry.store.exists(original_name(sha256_hex(inner)))
    assert sorted(p.name for p in hostile.root.iterdir()) == ["data", "inbox", "outside"]
    assert [p.name for p in (hostile.root / "outside").iterdir()] == ["secret.pdf"]


def test_twins_in_one_tick_are_one_document_with_an_alias(hostile: HostileTick) -> None:
    key = hostile.expected["twin a.pdf"].detail
    record = hostile.registry.get(key)
    assert record is not None
    assert (record.file_name, record.aliases) == ("twin a.pdf", ("twin b.pdf",))


def deny(inbox: Path, name: str, error: OSError) -> LocalInbox:
    """The real drop folder, except that reading `name` fails with `error`."""

    class Denying(LocalInbox):
        def read(self, entry: InboxEntry, max_bytes: int) -> bytes:
            if entry.name == name:
                raise error
            return super().read(entry, max_bytes)

    return Denying(inbox)


def test_a_file_that_may_not_be_read_is_refused_then_taken_once_readable(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "locked.pdf").write_bytes(good_pdf(1))
    (inbox / "open.pdf").write_bytes(good_pdf(2))
    registry = DocumentRegistry(LocalObjectStore(tmp_path / "data"))
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(inbox / "locked.pdf"))

    first = take(inbox, registry, source=deny(inbox, "locked.pdf", denied))

    (refusal,) = first.refused
    assert (refusal.file_name, refusal.reason, refusal.message) == (
        "locked.pdf",
        RefusalReason.PERMISSION_DENIED,
        "the file may not be read (Permission denied); fix its permissions",
    )
    assert registry.refusals() == [refusal]
    assert [registry.get(key).file_name for key in first.new_keys] == ["open.pdf"]  # type: ignore[union-attr]
    time.sleep(0.05)  # past the file system's clock tick, so the chmod below is a new ctime
    (inbox / "locked.pdf").chmod(0o644)  # the fix bumps the file's ctime: it arrives again
    second = take(inbox, registry, first.cursor)
    assert [registry.get(key).file_name for key in second.new_keys] == ["locked.pdf"]  # type: ignore[union-attr]
    assert registry.refusals() == []


def test_a_passing_read_error_is_retried_on_the_next_tick(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.pdf").write_bytes(good_pdf(1))
    registry = DocumentRegistry(LocalObjectStore(tmp_path / "data"))
    failing = deny(inbox, "a.pdf", OSError(errno.EIO, os.strerror(errno.EIO)))

    first = take(inbox, registry, source=failing)

    assert first.retrying == (("a.pdf", "OSError: Input/output error"),)
    assert (first.new_keys, first.refused, first.cursor.retry) == ((), (), frozenset({"a.pdf"}))
    assert first.summary() == "1 read errors, retried next tick"
    second = take(inbox, registry, first.cursor)  # the file itself did not change
    assert len(second.new_keys) == 1 and second.cursor.retry == frozenset()


def test_a_file_that_grew_after_the_listing_is_taken_whole_later(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = good_pdf(1)
    path = inbox / "growing.pdf"
    path.write_bytes(data[:1000])
    registry = DocumentRegistry(LocalObjectStore(tmp_path / "data"))
    plan = plan_intake(scan_inbox(inbox), IntakeCursor(), time.time_ns(), 0, 100)
    with path.open("ab") as stream:  # the writer goes on between the listing and the read
        stream.write(data[1000:])

    first = take_documents(plan, LocalInbox(inbox), registry, lambda key: False, LIMITS)

    assert (first.growing, first.new_keys, first.unreadable) == (("growing.pdf",), (), ())
    assert first.cursor.retry == frozenset({"growing.pdf"})
    assert list(registry.store.list("registry")) == []
    second = take(inbox, registry, first.cursor)
    (key,) = second.new_keys
    record = registry.get(key)
    assert record is not None and registry.original(record) == data


def test_a_tick_holds_a_few_files_in_memory_at_a_time() -> None:
    """Files are read and stored a chunk at a time (8 files, 64 MiB by listed size; a larger
    file alone), in order, so 1,000 large PDFs never sit in memory together."""
    from extraction_pipeline.core.intake.admission import CHUNK_BYTES, INTAKE_THREADS, _chunks
    from extraction_pipeline.core.intake.inbox import InboxEntry

    def entries(*sizes: int) -> tuple[InboxEntry, ...]:
        return tuple(InboxEntry(f"{i}.pdf", size, 0, 0) for i, size in enumerate(sizes))

    small = entries(*[1000] * 20)
    assert [len(c) for c in _chunks(small)] == [INTAKE_THREADS, INTAKE_THREADS, 4]
    big = CHUNK_BYTES // 2 + 1
    mixed = entries(10, big, big, CHUNK_BYTES * 2, 10)
    assert [[e.name for e in c] for c in _chunks(mixed)] == [
        ["0.pdf", "1.pdf"],
        ["2.pdf"],
        ["3.pdf"],
        ["4.pdf"],
    ]
