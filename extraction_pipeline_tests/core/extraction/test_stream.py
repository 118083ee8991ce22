"""Extracting registered documents against the model simulator over loopback HTTP."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from extraction_pipeline.cli.samples import SampleInvoice, invoice_pdf, make_invoice
from extraction_pipeline.core.documents.pdf import PdfDocumentInfo, PdfLimits, read_pdf
from extraction_pipeline.core.documents.registry import DocumentRegistry
from extraction_pipeline.core.extraction.outcomes import ExtractionJob, SourceRead, read_source
from extraction_pipeline.core.extraction.records import ExtractionRecord, FindingRecord, RecordStore
from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.core.extraction.stream import ExtractionStream, extract_documents
from extraction_pipeline.core.extraction.validation import ValidationPolicy
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.store import LocalObjectStore
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.pdfs import encrypted_pdf, good_pdf, truncated_pdf
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY, invoice_text, text_pdf


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path)


@pytest.fixture
def registry(store: LocalObjectStore) -> DocumentRegistry:
    return DocumentRegistry(store)


@pytest.fixture
def job(
    model_simulator: SimulatorControl, registry: DocumentRegistry, store: LocalObjectStore
) -> ExtractionJob:
    config = AgentConfig(
        base_url=model_simulator.base_url,
        api_key=TEST_API_KEY,
        timeout_seconds=5.0,
        max_retries=1,
        backoff_base_seconds=0.01,
        backoff_max_seconds=0.05,
    )
    return ExtractionJob(
        registry=registry,
        records=RecordStore(store),
        schema=Invoice,
        config=config,
        policy=ValidationPolicy(),
        pdf_limits=PdfLimits(),
        run_id="run-test",
    )


def register(registry: DocumentRegistry, file_name: str, data: bytes) -> str:
    return registry.register(file_name, data).record.document_key


def register_invoice(
    registry: DocumentRegistry, index: int, extra_text: str = ""
) -> tuple[str, SampleInvoice]:
    invoice = make_invoice(index, pages=1)
    key = register(registry, f"invoice {index}.pdf", invoice_pdf(invoice, extra_text=extra_text))
    return key, invoice


def ground_truth(invoice: SampleInvoice) -> dict[str, Any]:
    """The record a correct extraction of `invoice` gives (`Invoice.model_dump(mode="json")`)."""
    return {
        "invoice_number": invoice.invoice_number,
        "invoice_date": invoice.invoice_date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        "vendor_name": invoice.vendor_name,
        "customer_name": invoice.customer_name,
        "currency": invoice.currency,
        "subtotal": invoice.subtotal,
        "tax": invoice.tax,
        "total": invoice.total,
        "line_items": [
            {
                "description": item.description,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
                "amount": item.amount,
            }
            for item in invoice.line_items
        ],
    }


def request_count(sim: SimulatorControl) -> int:
    return int(sim.requests()["count"])


def test_every_document_is_extracted_with_the_printed_fields(
    model_simulator: SimulatorControl, registry: DocumentRegistry, job: ExtractionJob
) -> None:
    documents = [register_invoice(registry, index) for index in (1, 2, 3)]
    keys = [key for key, _ in documents]

    outcomes = extract_documents(job, keys)

    assert [outcome.document_key for outcome in outcomes] == keys
    for outcome, (key, invoice) in zip(outcomes, documents, strict=True):
        assert outcome.status == "extracted"
        assert outcome.record == ground_truth(invoice)
        assert outcome.findings == []
        assert outcome.review_reason is None
        assert outcome.error_kind is None
        assert outcome.cache_hit is False
        assert outcome.pages == 1
        assert outcome.run_id == "run-test"
        assert outcome.sha256 == registry.get(key).sha256
        assert outcome.call is not None
        assert outcome.call.attempts == 1
        assert outcome.call.input_mode == "text"
        assert outcome.call.input_tokens > 0
        assert outcome.call.cost_usd is not None and outcome.call.cost_usd > 0
    assert [o.file_name for o in outcomes] == ["invoice 1.pdf", "invoice 2.pdf", "invoice 3.pdf"]
    assert request_count(model_simulator) == 3


def test_each_outcome_is_saved_in_the_record_store_under_its_key(
    registry: DocumentRegistry, job: ExtractionJob
) -> None:
    key, invoice = register_invoice(registry, 4)
    seen: list[ExtractionRecord] = []

    (outcome,) = extract_documents(job, [key], on_outcome=seen.append)

    assert job.records.load(key) == outcome
    assert seen == [outcome]
    assert job.records.load(key).record["invoice_number"] == invoice.invoice_number


def test_refused_document_fails_for_review_without_failing_the_others(
    model_simulator: SimulatorControl, registry: DocumentRegistry, job: ExtractionJob
) -> None:
    good_key, good = register_invoice(registry, 5)
    refused_key, _ = register_invoice(registry, 6, extra_text="SIMULATE:REFUSE")

    good_outcome, refused = extract_documents(job, [good_key, refused_key])

    assert good_outcome.status == "extracted"
    assert good_outcome.record == ground_truth(good)
    assert refused.status == "failed"
    assert refused.error_kind == "refused"
    assert refused.retryable is False
    assert refused.record is None
    assert refused.error_message is not None and refused.error_message.startswith("refused: ")
    assert refused.review_reason == refused.error_message
    assert refused.pages == 1
    # The refusal was answered (and billed): its call is kept.
    assert refused.call is not None and refused.call.attempts == 1
    assert job.records.load(refused_key) == refused
    assert model_simulator.requests()["by_fault"] == {"refuse": 1}


def test_totals_that_do_not_add_up_need_review_with_a_totals_finding(
    registry: DocumentRegistry, job: ExtractionJob
) -> None:
    key = register(registry, "bad total.pdf", text_pdf(invoice_text("INV-BAD", total="150.00")))

    (outcome,) = extract_documents(job, [key])

    message = "subtotal 100.00 + tax 19.00 = 119.00, total is 150.00"
    assert outcome.status == "needs_review"
    assert outcome.record is not None and outcome.record["total"] == 150.0
    assert outcome.findings == [FindingRecord(check="totals_add_up", message=message)]
    assert outcome.review_reason == message
    assert outcome.error_kind is None


def test_second_call_reuses_stored_results_and_asks_only_for_the_failed_document(
    model_simulator: SimulatorControl, registry: DocumentRegistry, job: ExtractionJob
) -> None:
    first_key, _ = register_invoice(registry, 7)
    second_key, second_invoice = register_invoice(registry, 8)
    refused_key, refused_invoice = register_invoice(registry, 9, extra_text="SIMULATE:REFUSE")
    review_key = register(registry, "review.pdf", text_pdf(invoice_text("INV-R", total="1.00")))
    keys = [first_key, second_key, refused_key, review_key]
    first_run = extract_documents(job, keys)
    assert request_count(model_simulator) == 4

    second_run = extract_documents(job, keys)

    requests = model_simulator.requests()
    assert requests["count"] == 5
    assert refused_invoice.invoice_number in requests["requests"][-1]["document_excerpt"]
    assert requests["by_fault"] == {"refuse": 2}
    assert [o.cache_hit for o in second_run] == [True, True, False, True]
    assert [o.status for o in second_run] == ["extracted", "extracted", "failed", "needs_review"]
    for before, after in zip(first_run, second_run, strict=True):
        assert after.record == before.record
        assert after.findings == before.findings
    # The reused result carries the call that paid for it, unchanged.
    assert second_run[1].call == first_run[1].call
    assert second_run[1].record == ground_truth(second_invoice)
    assert job.records.load(second_key) == second_run[1]


def test_successful_documents_are_never_paid_for_twice(
    model_simulator: SimulatorControl, registry: DocumentRegistry, job: ExtractionJob
) -> None:
    keys = [register_invoice(registry, index)[0] for index in (10, 11)]
    extract_documents(job, keys)
    assert request_count(model_simulator) == 2

    again = extract_documents(job, keys)
    reversed_again = extract_documents(job, list(reversed(keys)))

    assert request_count(model_simulator) == 2
    assert all(outcome.cache_hit for outcome in [*again, *reversed_again])
    assert [o.document_key for o in reversed_again] == list(reversed(keys))


def test_cache_hit_keeps_the_page_count(registry: DocumentRegistry, job: ExtractionJob) -> None:
    invoice = make_invoice(12, pages=3)
    key = register(registry, "three pages.pdf", invoice_pdf(invoice))
    (first,) = extract_documents(job, [key])
    assert first.pages == 3

    (again,) = extract_documents(job, [key])

    assert again.cache_hit is True
    assert again.pages == 3


def test_unregistered_key_fails_without_a_model_call(
    model_simulator: SimulatorControl, registry: DocumentRegistry, job: ExtractionJob
) -> None:
    key, _ = register_invoice(registry, 13)

    missing, found = extract_documents(job, ["never-registered-0123456789ab", key])

    assert missing.status == "failed"
    assert missing.error_kind == "not_registered"
    assert missing.error_message == "no registration for never-registered-0123456789ab"
    assert missing.file_name == ""
    assert missing.call is None
    assert missing.review_reason is None
    assert found.status == "extracted"
    assert request_count(model_simulator) == 1


def test_only_unregistered_keys_make_no_model_call_at_all(
    model_simulator: SimulatorControl, job: ExtractionJob
) -> None:
    (missing,) = extract_documents(job, ["ghost-000000000000"])
    assert missing.status == "failed"
    assert job.records.load("ghost-000000000000") == missing
    assert request_count(model_simulator) == 0


def test_truncated_pdf_fails_as_unreadable_input_for_review(
    model_simulator: SimulatorControl, registry: DocumentRegistry, job: ExtractionJob
) -> None:
    data = invoice_pdf(make_invoice(14, pages=1))
    key = register(registry, "cut.pdf", data[: len(data) // 2])

    (outcome,) = extract_documents(job, [key])

    assert outcome.status == "failed"
    assert outcome.error_kind == "unreadable_input"
    assert outcome.error_message is not None
    assert outcome.error_message.startswith("unreadable_input: ")
    assert outcome.review_reason == outcome.error_message
    assert outcome.retryable is False
    assert outcome.pages is None
    assert outcome.call is None
    assert request_count(model_simulator) == 0


def test_pre_read_infos_are_used_instead_of_reading_the_pdf_again(
    model_simulator: SimulatorControl, registry: DocumentRegistry, job: ExtractionJob
) -> None:
    key, invoice = register_invoice(registry, 15)
    real = read_pdf(invoice_pdf(invoice))
    # A different text layer and page count prove the caller's info is what was sent.
    text = invoice_text("INV-FROM-READ")
    info = PdfDocumentInfo(
        sha256=real.sha256,
        size_bytes=real.size_bytes,
        page_count=7,
        page_texts=(text,),
        has_text_layer=True,
    )

    (outcome,) = extract_documents(job, [key], read={key: info})

    assert outcome.status == "extracted"
    assert outcome.pages == 7
    assert outcome.record is not None
    assert outcome.record["invoice_number"] == "INV-FROM-READ"
    assert outcome.record["total"] == 119.0
    assert "INV-FROM-READ" in model_simulator.requests()["requests"][0]["document_excerpt"]


def test_pre_read_infos_for_other_keys_do_not_stop_reading_the_rest(
    registry: DocumentRegistry, job: ExtractionJob
) -> None:
    read_key, _ = register_invoice(registry, 16)
    other_key, other = register_invoice(registry, 17)
    info = read_pdf(registry.original(registry.get(read_key)))

    outcomes = extract_documents(job, [read_key, other_key], read={read_key: info})

    assert [o.status for o in outcomes] == ["extracted", "extracted"]
    assert outcomes[1].record == ground_truth(other)


@pytest.mark.parametrize(
    ("data", "limits", "kind", "message"),
    [
        (b"", PdfLimits(), "EmptyFile", "EmptyFile: f.pdf: the file is empty (0 bytes)"),
        (b"hello", PdfLimits(), "NotAPdf", "NotAPdf: f.pdf: the file does not start with"),
        (truncated_pdf(), PdfLimits(), "CorruptPdf", "CorruptPdf: f.pdf: the PDF is truncated"),
        (encrypted_pdf(), PdfLimits(), "EncryptedPdf", "EncryptedPdf: f.pdf: the PDF is encrypted"),
        (good_pdf(pages=2), PdfLimits(max_pages=1), "TooLarge", "TooLarge: f.pdf: the PDF has 2"),
    ],
)
def test_an_unreadable_source_is_the_documents_failed_outcome(
    registry: DocumentRegistry, data: bytes, limits: PdfLimits, kind: str, message: str
) -> None:
    record = registry.register("f.pdf", data).record

    outcome = read_source(registry, record.document_key, limits, run_id="run-7")

    assert isinstance(outcome, ExtractionRecord)
    assert (outcome.document_key, outcome.file_name, outcome.sha256) == (
        record.document_key,
        "f.pdf",
        record.sha256,
    )
    assert (outcome.status, outcome.error_kind, outcome.retryable) == ("failed", kind, False)
    assert outcome.error_message is not None and outcome.error_message.startswith(message)
    assert outcome.review_reason is None and outcome.call is None and outcome.run_id == "run-7"


def test_a_readable_source_and_a_missing_registration(registry: DocumentRegistry) -> None:
    key = register(registry, "ok.pdf", good_pdf(pages=2))

    source = read_source(registry, key, PdfLimits())
    missing = read_source(registry, "ghost-000000000000", PdfLimits())

    assert isinstance(source, SourceRead)
    assert source.document.document_key == key and source.info.page_count == 2
    assert isinstance(missing, ExtractionRecord)
    assert missing.error_kind == "DocumentNotRegistered" and missing.file_name == ""


def test_an_interrupted_stream_keeps_the_answers_in_flight_and_sends_nothing_more(
    job: ExtractionJob, registry: DocumentRegistry, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(latency_seconds=1.5)
    job = replace(job, config=replace(job.config, max_concurrency=2))
    keys = [register_invoice(registry, index)[0] for index in range(1, 7)]
    with ExtractionStream(job) as stream:
        for key in keys:
            stream.submit(key)
        deadline = time.monotonic() + 10
        while stream.calls_in_flight() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        kept = stream.interrupt()
    assert len(kept) == 2 and {o.status for o in kept} == {"extracted"}
    assert model_simulator.requests()["count"] == 2  # the other four were never sent
    for outcome in kept:  # stored: the next attempt finds them without asking again
        assert job.records.load(outcome.document_key) == outcome
    again = extract_documents(job, [o.document_key for o in kept])
    assert all(o.cache_hit for o in again)
    assert model_simulator.requests()["count"] == 2


def test_an_interrupted_stream_gives_up_on_calls_that_outlive_the_grace_period(
    job: ExtractionJob, registry: DocumentRegistry, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(latency_seconds=4)
    job = replace(job, stop_grace_seconds=0.5)
    key, _ = register_invoice(registry, 1)
    with ExtractionStream(job) as stream:
        stream.submit(key)
        deadline = time.monotonic() + 10
        while stream.calls_in_flight() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        assert stream.interrupt() == []
        assert time.monotonic() - started < 3
    assert job.records.load(key) is None


def test_a_stream_whose_caller_ends_without_closing_it_drains_like_an_interrupt(
    job: ExtractionJob, registry: DocumentRegistry, model_simulator: SimulatorControl
) -> None:
    """As when an interrupt ends a run worker outside the step's own code: the process exits,
    and the calls in flight must still be stored, the rest never sent."""
    model_simulator.configure(latency_seconds=1.5)
    job = replace(job, config=replace(job.config, max_concurrency=2))
    keys = [register_invoice(registry, index)[0] for index in range(1, 7)]
    streams: list[ExtractionStream] = []

    def caller() -> None:
        stream = ExtractionStream(job).__enter__()  # never closed, as after such an interrupt
        streams.append(stream)
        for key in keys:
            stream.submit(key)
        deadline = time.monotonic() + 10
        while stream.calls_in_flight() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join()
    streams[0]._thread.join(timeout=job.stop_grace_seconds + 5)
    assert not streams[0]._thread.is_alive()
    stored = [key for key in keys if job.records.load(key) is not None]
    assert len(stored) == 2
    assert model_simulator.requests()["count"] == 2


def test_remaining_groups_gather_the_outcomes_that_arrive_together(
    job: ExtractionJob, registry: DocumentRegistry, model_simulator: SimulatorControl
) -> None:
    """Calls answered together come out as one group (recorded in one batch); a call answered
    well after the window is a group of its own; every outcome comes out once."""
    model_simulator.configure(latency_seconds=0.5)
    job = replace(job, config=replace(job.config, max_concurrency=3))
    keys = [register_invoice(registry, index)[0] for index in range(1, 5)]
    with ExtractionStream(job) as stream:
        for key in keys:
            stream.submit(key)
        stream.close()
        groups = [[o.document_key for o in group] for group in stream.remaining_groups(0.3)]
    # Three calls at once, answered together; the fourth waits for a free slot and comes later.
    assert [len(group) for group in groups] == [3, 1]
    assert sorted(key for group in groups for key in group) == sorted(keys)
