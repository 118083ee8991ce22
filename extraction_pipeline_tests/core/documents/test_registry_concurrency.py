"""Two OS processes registering the same bytes at the same moment make one document."""

from __future__ import annotations

import multiprocessing
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from extraction_pipeline.core.documents.registry import DocumentRegistry, RegistrationOutcome
from extraction_pipeline.core.store import LocalObjectStore

ROUNDS = 150


def content(round_number: int) -> bytes:
    return b"%PDF-1.7\n% round " + str(round_number).encode() + b"\n%%EOF\n"


def register_rounds(root: str, file_name: str, barrier: Barrier, results: Queue) -> None:
    """Register round after round, each started together with the other process."""
    registry = DocumentRegistry(LocalObjectStore(root))
    outcomes = []
    for round_number in range(ROUNDS):
        barrier.wait(timeout=60)
        registration = registry.register(file_name, content(round_number))
        outcomes.append((registration.outcome.value, registration.record.document_key))
    results.put((file_name, outcomes))


@pytest.mark.parametrize(
    "names",
    [("same.pdf", "same.pdf"), ("sensor.pdf", "ingest.pdf")],
    ids=["same-name", "two-names"],
)
def test_concurrent_registrations_of_the_same_bytes_make_one_document(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    processes = [
        spawn.Process(target=register_rounds, args=(str(tmp_path), name, barrier, results))
        for name in names
    ]
    for process in processes:
        process.start()
    first, second = (results.get(timeout=120)[1] for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0

    registry = DocumentRegistry(LocalObjectStore(tmp_path))
    records = list(registry.store.list("registry/documents"))
    assert len(records) == ROUNDS
    for round_number, (a, b) in enumerate(zip(first, second, strict=True)):
        outcomes = sorted([a[0], b[0]])
        assert a[1] == b[1], f"round {round_number}: two documents {a[1]} and {b[1]}"
        assert outcomes.count(RegistrationOutcome.NEW.value) == 1, (round_number, outcomes)
        record = registry.get(a[1])
        assert record is not None
        assert registry.get_by_sha256(record.sha256) == record
        assert registry.original(record) == content(round_number)
        if names[0] != names[1]:
            assert {record.file_name, *record.aliases} == set(names)
