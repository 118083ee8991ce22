"""The inbox sensor's decisions on a real Postgres instance: run requests, partitions, cursor."""

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from extraction_pipeline.core.documents.identity import document_key
from extraction_pipeline.core.documents.pdf import sha256_hex
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.intake.inbox import IntakeCursor
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.instance.names import RANGE_END_TAG, RANGE_START_TAG
from extraction_pipeline_tests.defs.helpers import definitions_for, drop
from extraction_pipeline_tests.hostile import LIMITS, drop_hostile_files
from extraction_pipeline_tests.pdfs import encrypted_pdf, good_pdf, truncated_pdf


@dataclass(frozen=True)
class Ticked:
    """What a tick returned, and the partitions it added (the sensor adds them itself)."""

    run_requests: list[dg.RunRequest]
    skip_reason: dg.SkipReason | None
    cursor: str | None
    added: list[str]


class Tick:
    """Evaluates the sensor like the daemon does, keeping its cursor."""

    def __init__(self, instance: dg.DagsterInstance, settings: Settings) -> None:
        self.instance = instance
        self.defs = definitions_for(settings)
        self.sensor = self.defs.resolve_sensor_def("inbox_sensor")
        self.cursor: str | None = None

    def __call__(self) -> Ticked:
        before = set(self.instance.get_dynamic_partitions("documents"))
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            definitions=self.defs,
            resources={"document_store": self.defs.resources["document_store"]},
        ) as context:  # closed now, not by the garbage collector during another test
            result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        # The daemon would check each key of a partition request one query at a time.
        assert not result.dynamic_partitions_requests
        self.cursor = result.cursor
        added = [k for k in self.instance.get_dynamic_partitions("documents") if k not in before]
        return Ticked(result.run_requests or [], result.skip_reason, result.cursor, added)


@pytest.fixture
def tick(instance: dg.DagsterInstance, settings: Settings) -> Tick:
    return Tick(instance, settings)


def skipped(result: Ticked) -> str:
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def skipped_or_summary(result: Ticked) -> str | None:
    return result.skip_reason.skip_message if result.skip_reason else None


def added_keys(result: Ticked) -> list[str]:
    return result.added


def test_new_pdfs_become_partitions_and_one_ranged_run(tick: Tick, settings: Settings) -> None:
    for index in (1, 2, 3):
        drop(settings.inbox, f"invoice {index}.pdf", good_pdf(index), age_seconds=5)
    result = tick()
    keys = added_keys(result)
    assert [k.split("-")[1] for k in keys] == ["1", "2", "3"]
    (request,) = result.run_requests
    assert request.tags[RANGE_START_TAG] == keys[0]
    assert request.tags[RANGE_END_TAG] == keys[-1]
    assert request.run_key == f"intake:{keys[0]}..{keys[-1]}"
    assert request.job_name == "intake_job"
    assert tick.instance.get_dynamic_partitions("documents") == keys
    registry = DocumentRegistry(LocalObjectStore(settings.data_dir))
    assert registry.original(registry.get(keys[0])) == good_pdf(1)
    assert IntakeCursor.parse(result.cursor).watermark_ns > 0


def test_single_new_pdf_gets_a_partition_keyed_run(tick: Tick, settings: Settings) -> None:
    drop(settings.inbox, "one.pdf", good_pdf())
    result = tick()
    (request,) = result.run_requests
    assert request.partition_key == added_keys(result)[0]
    assert request.job_name == "intake_job"


def test_unreadable_pdfs_run_apart_so_they_cannot_hold_up_extraction(
    tick: Tick, settings: Settings
) -> None:
    drop(settings.inbox, "good 1.pdf", good_pdf(1), age_seconds=5)
    drop(settings.inbox, "broken.pdf", truncated_pdf(), age_seconds=4)
    drop(settings.inbox, "good 2.pdf", good_pdf(2), age_seconds=3)
    drop(settings.inbox, "locked.pdf", encrypted_pdf(), age_seconds=2)
    result = tick()
    keys = added_keys(result)
    assert [k.rsplit("-", 1)[0] for k in keys] == ["good-1", "good-2", "broken", "locked"]
    readable, unreadable = result.run_requests
    assert readable.job_name == "intake_job"
    assert (readable.tags[RANGE_START_TAG], readable.tags[RANGE_END_TAG]) == (keys[0], keys[1])
    assert unreadable.job_name == "source_job"
    assert (unreadable.tags[RANGE_START_TAG], unreadable.tags[RANGE_END_TAG]) == (keys[2], keys[3])
    assert skipped_or_summary(result) is None


def test_next_tick_costs_nothing_for_files_already_taken(tick: Tick, settings: Settings) -> None:
    drop(settings.inbox, "a.pdf", good_pdf())
    first = tick()
    assert len(added_keys(first)) == 1
    second = tick()
    assert second.run_requests == [] and added_keys(second) == []
    assert skipped(second) == "no new files"
    assert second.cursor is not None


def test_renamed_and_redropped_copies_never_make_a_second_document(
    tick: Tick, settings: Settings
) -> None:
    drop(settings.inbox, "a.pdf", good_pdf())
    (key,) = added_keys(tick())
    drop(settings.inbox, "renamed copy.pdf", good_pdf())
    (settings.inbox / "a.pdf").unlink()
    drop(settings.inbox, "a.pdf", good_pdf())  # re-dropped: new ctime, same bytes
    result = tick()
    assert result.run_requests == [] and added_keys(result) == []
    assert skipped(result) == "1 already known, 1 duplicate content"
    assert tick.instance.get_dynamic_partitions("documents") == [key]


def test_growing_file_waits_until_it_settles(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    slow = settings.model_copy(update={"settle_seconds": 30.0})
    tick = Tick(instance, slow)
    drop(slow.inbox, "copying.pdf", good_pdf())
    result = tick()
    assert result.run_requests == [] and skipped(result) == "1 still growing"
    assert (
        IntakeCursor.parse(result.cursor).watermark_ns
        <= (slow.inbox / "copying.pdf").stat().st_ctime_ns
    )


def test_non_pdf_files_are_refused_and_recorded(tick: Tick, settings: Settings) -> None:
    drop(settings.inbox, "notes.txt", b"not a pdf")
    drop(settings.inbox, "photo.jpg", b"\xff\xd8\xff")
    result = tick()
    assert result.run_requests == [] and skipped(result) == "2 refused"
    refusals = DocumentRegistry(LocalObjectStore(settings.data_dir)).refusals()
    assert sorted((r.file_name, r.reason.value) for r in refusals) == [
        ("notes.txt", "not_a_pdf_name"),
        ("photo.jpg", "not_a_pdf_name"),
    ]


def test_cap_limits_keys_per_tick_and_the_rest_follow(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    capped = settings.model_copy(update={"sensor_max_files": 2})
    tick = Tick(instance, capped)
    for index in range(5):
        drop(capped.inbox, f"doc{index}.pdf", good_pdf(index + 1), age_seconds=5)
    sizes = [len(added_keys(tick())) for _ in range(4)]
    assert sizes == [2, 2, 1, 0]
    assert len(instance.get_dynamic_partitions("documents")) == 5


def test_registered_document_whose_partition_is_missing_is_restored(
    tick: Tick, settings: Settings
) -> None:
    # A tick that registered the file but whose partition request never applied (daemon crash).
    record = (
        DocumentRegistry(LocalObjectStore(settings.data_dir)).register("a.pdf", good_pdf()).record
    )
    drop(settings.inbox, "a.pdf", good_pdf())
    result = tick()
    assert added_keys(result) == [record.document_key]
    (request,) = result.run_requests
    assert request.partition_key == record.document_key


def test_a_large_tick_is_split_into_runs_of_bounded_size() -> None:
    from extraction_pipeline.core.intake.admission import IntakeDecision
    from extraction_pipeline.defs.sensors import intake_run_requests

    size = Settings().documents_per_run
    keys = tuple(f"doc-{i:04d}" for i in range(2 * size + 50))
    decision = IntakeDecision(new_keys=keys)
    requests = intake_run_requests(decision, size)
    ranges = [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in requests]
    assert ranges == [
        (keys[0], keys[size - 1]),
        (keys[size], keys[2 * size - 1]),
        (keys[2 * size], keys[-1]),
    ]


def test_hostile_and_broken_files_each_get_their_outcome_and_the_good_ones_run(
    instance: dg.DagsterInstance,
    settings: Settings,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    limited = settings.model_copy(
        update={"max_bytes": LIMITS.max_bytes, "max_pages": LIMITS.max_pages}
    )
    tick = Tick(instance, limited)
    expected = drop_hostile_files(limited.inbox, tmp_path / "outside")
    registry = DocumentRegistry(LocalObjectStore(limited.data_dir))

    result = tick()

    new = sorted(e.detail for e in expected.values() if e.outcome == "new")
    unreadable = {name: e.detail for name, e in expected.items() if e.outcome == "unreadable"}
    keys = added_keys(result)
    assert sorted(keys[: len(new)]) == new
    unreadable_keys = keys[len(new) :]
    assert sorted(registry.get(k).file_name for k in unreadable_keys) == sorted(unreadable)  # type: ignore[union-attr]
    extract, source = result.run_requests
    assert (extract.job_name, extract.tags[RANGE_START_TAG], extract.tags[RANGE_END_TAG]) == (
        "intake_job",
        keys[0],
        keys[len(new) - 1],
    )
    assert (source.job_name, source.tags[RANGE_START_TAG], source.tags[RANGE_END_TAG]) == (
        "source_job",
        unreadable_keys[0],
        unreadable_keys[-1],
    )
    assert instance.get_dynamic_partitions("documents") == keys
    refused = {name: e.detail for name, e in expected.items() if e.outcome == "refused"}
    recorded = {r.file_name: f"{r.reason.value}: {r.message}" for r in registry.refusals()}
    assert recorded == refused
    assert IntakeCursor.parse(result.cursor).retry == frozenset()

    log = capfd.readouterr().err
    for name, detail in refused.items():
        assert f"{name}: refused, {detail}" in log
    for key in unreadable_keys:
        record = registry.get(key)
        assert record is not None
        assert f"{key}: unreadable ({unreadable[record.file_name]})" in log
    for name, e in expected.items():
        if e.outcome == "duplicate":
            assert f"{name}: same content as document {e.detail}; not a new document" in log

    assert skipped(tick()) == "no new files"
    drop(limited.inbox, "after the storm.pdf", good_pdf(11))
    (key,) = added_keys(later := tick())
    assert key == document_key("after the storm.pdf", sha256_hex(good_pdf(11)))
    assert [r.partition_key for r in later.run_requests] == [key]


def test_a_file_being_appended_to_is_taken_whole_once_it_settles(
    instance: dg.DagsterInstance, settings: Settings
) -> None:
    """A writer appends to the file in the inbox (no temporary name) across many ticks."""
    settling = settings.model_copy(update={"settle_seconds": 1.0})
    tick = Tick(instance, settling)
    data = good_pdf(3)
    path = settling.inbox / "scanner output.pdf"
    path.touch()

    def write_slowly() -> None:
        with path.open("ab", buffering=0) as stream:
            for start in range(0, len(data), 64):
                stream.write(data[start : start + 64])
                time.sleep(0.1)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    results = []
    while writer.is_alive():
        results.append(tick())  # a tick may wait (up to the settle time) for the file
        time.sleep(0.1)
    writer.join()
    deadline = time.monotonic() + 10
    while not any(added_keys(r) for r in results) and time.monotonic() < deadline:
        results.append(tick())
        time.sleep(0.2)
    taken = [index for index, r in enumerate(results) if added_keys(r)]
    assert len(taken) == 1, "taken once"
    assert taken[0] >= 2 and {skipped(r) for r in results[: taken[0]]} == {"1 still growing"}
    result = results[taken[0]]
    keys = added_keys(result)
    assert keys == [document_key("scanner output.pdf", sha256_hex(data))]  # the whole file
    assert [r.partition_key for r in result.run_requests] == keys
    registry = DocumentRegistry(LocalObjectStore(settling.data_dir))
    record = registry.get(keys[0])
    assert record is not None and registry.original(record) == data
    assert skipped(tick()) == "no new files"
