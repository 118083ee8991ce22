"""Batch extraction's pure parts: the request lines, their split, and reading result lines back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extraction_pipeline.cli.samples import invoice_pdf, make_invoice
from extraction_pipeline.core.documents.pdf import PdfLimits
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.extraction.batch import collect, encode, prepare, split
from extraction_pipeline.core.extraction.outcomes import ExtractionJob
from extraction_pipeline.core.extraction.records import RecordStore
from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.core.extraction.validation import ValidationPolicy
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline_tests.pdfs import truncated_pdf


@pytest.fixture
def job(tmp_path: Path) -> ExtractionJob:
    store = LocalObjectStore(tmp_path)
    return ExtractionJob(
        registry=DocumentRegistry(store),
        records=RecordStore(store),
        schema=Invoice,
        config=AgentConfig(api_key="sk-unused"),  # nothing here reaches a network
        policy=ValidationPolicy(),
        pdf_limits=PdfLimits(),
        run_id="run-test",
    )


def register(job: ExtractionJob, count: int) -> list[str]:
    return [
        job.registry.register(f"i{n}.pdf", invoice_pdf(make_invoice(n))).record.document_key
        for n in range(count)
    ]


def test_each_document_is_one_line_of_the_online_request(job: ExtractionJob) -> None:
    keys = register(job, 2)
    broken = job.registry.register("broken.pdf", truncated_pdf()).record.document_key

    prepared = prepare(job, [*keys, broken])

    assert [r.custom_id for r in prepared.requests] == keys
    line = json.loads(encode(prepared.requests[:1]))
    assert line["method"] == "POST" and line["url"] == "/v1/responses"
    body = line["body"]
    assert body["model"] == job.config.model
    assert body["text"]["format"]["type"] == "json_schema"
    assert body["text"]["format"]["strict"] is True
    assert body["store"] is False
    (unreadable,) = prepared.settled
    assert unreadable.document_key == broken and unreadable.error_kind == "unreadable_input"


def test_lines_are_split_by_count_and_by_bytes(job: ExtractionJob) -> None:
    requests = prepare(job, register(job, 5)).requests
    size = len(encode(requests[:1]))

    assert [len(g) for g in split(requests, max_requests=2)] == [2, 2, 1]
    assert [len(g) for g in split(requests, max_bytes=size * 3 + size // 2)] == [3, 2]
    assert [len(g) for g in split(requests)] == [5]


def test_result_lines_are_joined_by_custom_id_and_each_status_is_checked(
    job: ExtractionJob,
) -> None:
    server_error, bad_request, expired, missing = register(job, 4)
    lines = [  # in no particular order, as the API writes them
        {"custom_id": expired, "response": None, "error": {"code": "batch_expired"}},
        {
            "custom_id": bad_request,
            "response": {"status_code": 400, "body": {"error": {"message": "bad schema"}}},
            "error": None,
        },
        {
            "custom_id": server_error,
            "response": {"status_code": 500, "body": {"error": {"message": "oops"}}},
            "error": None,
        },
    ]
    results = b"".join(json.dumps(line).encode() + b"\n" for line in lines)

    collected = collect(job, "batch_1", [server_error, bad_request, expired, missing], results)

    outcomes = {o.document_key: o for o in collected.outcomes}
    assert set(outcomes) == {server_error, bad_request}
    assert outcomes[server_error].error_kind == "server_error"
    assert outcomes[bad_request].error_kind == "bad_request"
    assert outcomes[bad_request].retryable is False
    assert {o.batch_id for o in outcomes.values()} == {"batch_1"}
    # Submitted again: the retryable failure and the documents the batch never answered.
    assert collected.unanswered == [server_error, expired, missing]
    assert job.records.load(bad_request) == outcomes[bad_request]  # stored like online outcomes
