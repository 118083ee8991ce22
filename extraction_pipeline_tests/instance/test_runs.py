"""The run queries `runs status` and `runs wait` print: a run's documents and their outcomes, and
the chain of run retries that follows a failed run, on a real instance on Postgres."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from extraction_pipeline.cli.ingest import ingest
from extraction_pipeline.cli.launcher import INSTANCE_TEMPLATE, Environment
from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.settings import Settings
from extraction_pipeline.instance.document_runs import DocumentsRun
from extraction_pipeline.instance.names import (
    PARENT_RUN_TAG,
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    RETRY_NUMBER_TAG,
    WILL_RETRY_TAG,
)
from extraction_pipeline.instance.runs import (
    follow_retries,
    retry_expected,
    run_report,
)
from extraction_pipeline_tests.conftest import PROJECT_ROOT, storage_overrides
from extraction_pipeline_tests.pdfs import truncated_pdf

Status = dg.DagsterRunStatus


@pytest.fixture
def shipped_instance(pg_url: str) -> Iterator[dg.DagsterInstance]:
    """An instance with the shipped storage and run retries (dagster.yaml) on `pg_url`."""
    retries = yaml.safe_load(INSTANCE_TEMPLATE.read_text())["run_retries"]
    overrides = {**storage_overrides(pg_url), "run_retries": retries}
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


def add_run(
    instance: dg.DagsterInstance, status: dg.DagsterRunStatus, **tags: str
) -> dg.DagsterRun:
    run = dg.DagsterRun(job_name="intake_job", run_id=str(uuid.uuid4()), status=status, tags=tags)
    return instance.add_run(run)


def retry(
    instance: dg.DagsterInstance, parent: dg.DagsterRun, status: dg.DagsterRunStatus
) -> dg.DagsterRun:
    """A run retry of `parent`, tagged as Dagster's run retries tag theirs."""
    number = str(int(parent.tags.get(RETRY_NUMBER_TAG, "0")) + 1)
    tags = {PARENT_RUN_TAG: parent.run_id, RETRY_NUMBER_TAG: number}
    return add_run(instance, status, **tags)


def test_a_run_reports_each_document_of_its_range_with_its_outcome(
    instance: dg.DagsterInstance, pipeline_settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for number in (1, 2):
        (folder / f"good-{number}.pdf").write_bytes(invoice_pdf(make_invoice(number)))
    refused = invoice_pdf(make_invoice(3), extra_text="SIMULATE:REFUSE")
    (folder / "refused.pdf").write_bytes(refused)
    (folder / "broken.pdf").write_bytes(truncated_pdf())
    environment = Environment(PROJECT_ROOT, tmp_path / "home", pipeline_settings)
    files = sorted(folder.iterdir())

    source_run, intake_run = ingest(instance, environment, files, io.StringIO(), 10).run_ids

    intake = run_report(instance, intake_run)
    assert intake is not None
    # The refusal fails the run; the other documents were extracted all the same.
    assert (intake.job, intake.status, intake.trigger) == ("intake_job", "FAILURE", "ingest")
    assert intake.finished and intake.started_at is not None and intake.ended_at is not None
    # One ranged run: its documents read back from its range tags.
    by_name = {d.document_key.rsplit("-", 1)[0]: d for d in intake.documents}
    assert {name: d.outcome for name, d in by_name.items()} == {
        "good-1": "extracted",
        "good-2": "extracted",
        "refused": "failed",
    }
    assert by_name["refused"].error_kind == "refused"
    assert by_name["refused"].run_id == intake_run
    source = run_report(instance, source_run)
    assert source is not None and source.job == "source_job"
    (broken,) = source.documents
    assert (broken.outcome, broken.error_kind) == ("failed", "CorruptPdf")
    assert intake.retry_run_id is None and not intake.retry_pending
    assert run_report(instance, str(uuid.uuid4())) is None


def test_a_failed_run_is_followed_through_its_run_retries_to_the_last(
    shipped_instance: dg.DagsterInstance,
) -> None:
    first = add_run(shipped_instance, Status.FAILURE, **{WILL_RETRY_TAG: "true"})
    chain = follow_retries(shipped_instance, first.run_id)
    assert chain is not None and not chain.settled  # the retry is still to be launched
    report = run_report(shipped_instance, first.run_id)
    assert report is not None and report.retry_pending and report.retry_run_id is None

    second = retry(shipped_instance, first, Status.FAILURE)
    add_run(shipped_instance, Status.SUCCESS, **{PARENT_RUN_TAG: first.run_id})  # by hand
    third = retry(shipped_instance, second, Status.STARTED)
    chain = follow_retries(shipped_instance, first.run_id)
    assert chain is not None and not chain.settled
    assert [r.dagster_run.run_id for r in chain.runs] == [first.run_id, second.run_id, third.run_id]
    report = run_report(shipped_instance, first.run_id)
    assert report is not None and report.retry_run_id == second.run_id
    assert not report.retry_pending

    done = add_run(shipped_instance, Status.FAILURE, **{WILL_RETRY_TAG: "false"})
    chain = follow_retries(shipped_instance, done.run_id)
    assert chain is not None and chain.settled and not chain.succeeded
    assert follow_retries(shipped_instance, str(uuid.uuid4())) is None


@pytest.mark.parametrize(
    ("status", "will_retry", "enabled", "expected"),
    [
        (Status.FAILURE, "true", True, True),
        (Status.FAILURE, None, True, True),  # the tag is written just after the failure
        (Status.FAILURE, "false", True, False),
        (Status.FAILURE, None, False, False),
        (Status.CANCELED, None, True, False),
        (Status.SUCCESS, None, True, False),
        (Status.STARTED, None, True, False),
    ],
)
def test_a_retry_is_expected_only_for_a_failure_run_retries_take_up(
    status: dg.DagsterRunStatus, will_retry: str | None, enabled: bool, expected: bool
) -> None:
    tags = {} if will_retry is None else {WILL_RETRY_TAG: will_retry}
    run = dg.DagsterRun(job_name="intake_job", status=status, tags=tags)
    assert retry_expected(run, enabled) is expected


def test_submission_tags_name_one_document_or_a_range() -> None:
    assert DocumentsRun("intake_job", ["a"], {"t": "x"}).submission_tags == {
        "t": "x",
        PARTITION_TAG: "a",
    }
    assert DocumentsRun("intake_job", ["a", "b", "c"]).submission_tags == {
        RANGE_START_TAG: "a",
        RANGE_END_TAG: "c",
    }
