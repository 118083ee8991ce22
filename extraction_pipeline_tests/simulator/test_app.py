"""The simulator through the real OpenAI SDK with strict response validation."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai import OpenAI
from openai.types import Batch
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.core.model.prompt import output_format
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.simulator_fixture import (
    TEST_API_KEY,
    invoice_text,
    text_pdf,
)

FORMAT = output_format(Invoice)
BATCH_PHASES = ("validating", "in_progress", "finalizing", "completed")


@pytest.fixture
def client(model_simulator: SimulatorControl) -> Iterator[OpenAI]:
    with OpenAI(
        base_url=model_simulator.base_url,
        api_key=TEST_API_KEY,
        max_retries=0,
        _strict_response_validation=True,
    ) as sdk:
        yield sdk


def responses_create(client: OpenAI, content: list[dict[str, Any]]) -> Response:
    return client.responses.create(
        model="gpt-4.1-mini",
        input=[{"role": "user", "content": content}],  # type: ignore[list-item]
        text={"format": FORMAT.for_api("responses")},  # type: ignore[typeddict-item]
    )


def chat_create(client: OpenAI, text: str) -> ChatCompletion:
    return client.chat.completions.create(
        model="gpt-4.1-mini",
        messages=[{"role": "user", "content": text}],
        response_format=FORMAT.for_api("chat"),  # type: ignore[arg-type]
    )


def pdf_part(text: str) -> dict[str, Any]:
    data = base64.b64encode(text_pdf(text)).decode()
    return {
        "type": "input_file",
        "filename": "a.pdf",
        "file_data": f"data:application/pdf;base64,{data}",
    }


def test_responses_body_passes_strict_validation(client: OpenAI) -> None:
    response = responses_create(client, [{"type": "input_text", "text": invoice_text()}])
    assert response.status == "completed"
    assert Invoice.model_validate_json(response.output_text).total == 119.0
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response._request_id is not None


def test_inline_pdf_text_is_read(client: OpenAI) -> None:
    response = responses_create(client, [pdf_part(invoice_text("INV-PDF-1"))])
    assert Invoice.model_validate_json(response.output_text).invoice_number == "INV-PDF-1"


def test_uploaded_pdf_is_read_by_file_id(client: OpenAI) -> None:
    uploaded = client.files.create(
        file=("a.pdf", text_pdf(invoice_text("INV-UP-1")), "application/pdf"), purpose="user_data"
    )
    assert (uploaded.purpose, uploaded.filename) == ("user_data", "a.pdf")
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    response = responses_create(client, [{"type": "input_file", "file_id": uploaded.id}])
    assert Invoice.model_validate_json(response.output_text).invoice_number == "INV-UP-1"


def test_chat_body_passes_strict_validation(client: OpenAI) -> None:
    completion = chat_create(client, invoice_text())
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert Invoice.model_validate_json(choice.message.content or "").vendor_name
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_refusal_and_truncation_bodies_pass_strict_validation(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.set_faults("refuse:count=2", "truncate:count=2")
    refused = responses_create(client, [{"type": "input_text", "text": "x"}])
    assert refused.output[0].content[0].type == "refusal"  # type: ignore[union-attr]
    assert chat_create(client, "x").choices[0].message.refusal
    truncated = responses_create(client, [{"type": "input_text", "text": "x"}])
    assert truncated.status == "incomplete"
    assert (
        truncated.incomplete_details and truncated.incomplete_details.reason == "max_output_tokens"
    )
    assert chat_create(client, "x").choices[0].finish_reason == "length"


def test_rate_limit_carries_retry_headers_and_request_id(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.set_faults("429:count=1:retry_after=2:retry_after_ms=1500")
    with pytest.raises(openai.RateLimitError) as caught:
        chat_create(client, "x")
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "1500")
    assert caught.value.request_id and caught.value.code == "rate_limit_exceeded"


def test_missing_bearer_token_is_401(model_simulator: SimulatorControl) -> None:
    response = httpx2.post(f"{model_simulator.base_url}/responses", json={"model": "m"})
    assert response.status_code == 401


def test_models_list(client: OpenAI) -> None:
    assert "gpt-4.1-mini" in [model.id for model in client.models.list()]


def test_control_endpoints_replace_faults_log_and_reset(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.set_faults("500:count=3:match=BOOM")
    chat_create(client, "fine")
    with pytest.raises(openai.InternalServerError):
        chat_create(client, "BOOM")
    assert model_simulator.faults()[0].count == 2
    report = model_simulator.requests()
    assert (report["count"], report["by_fault"], report["in_flight"]) == (2, {"500": 1}, 0)
    assert [entry["status_code"] for entry in report["requests"]] == [200, 500]
    model_simulator.reset()
    assert model_simulator.requests()["count"] == 0
    assert model_simulator.faults() == []


def batch_line(custom_id: str, text: str) -> str:
    body = {
        "model": "gpt-4.1-mini",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
        "text": {"format": FORMAT.for_api("responses")},
    }
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": body}
    return json.dumps(line) + "\n"


def wait_for(client: OpenAI, batch: Batch, statuses: set[str]) -> tuple[Batch, list[str]]:
    seen = [batch.status]
    deadline = time.monotonic() + 10
    while batch.status not in statuses and time.monotonic() < deadline:
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)
        if batch.status != seen[-1]:
            seen.append(batch.status)
    return batch, seen


def test_batch_round_trip_with_output_and_error_files(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(batch_phase_seconds=0.25)
    jsonl = batch_line("doc-1", invoice_text("INV-B1")) + batch_line(
        "doc-2", invoice_text("INV-B2", extra_lines=("SIMULATE:500",))
    )
    uploaded = client.files.create(file=("b.jsonl", jsonl.encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/responses",
        completion_window="24h",
        metadata={"run_id": "r1"},
    )
    batch, seen = wait_for(client, batch, {"completed"})
    # Polling may miss a short phase on a loaded machine; the order must hold regardless.
    assert seen == [status for status in BATCH_PHASES if status in seen]
    assert (seen[0], seen[-1]) == ("validating", "completed") and "in_progress" in seen
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    assert batch.metadata == {"run_id": "r1"} and batch.usage is not None
    assert batch.output_file_id and batch.error_file_id
    outputs = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert [line["custom_id"] for line in outputs] == ["doc-1"]
    body = Response.model_validate(outputs[0]["response"]["body"])
    assert Invoice.model_validate_json(body.output_text).invoice_number == "INV-B1"
    assert (errors[0]["custom_id"], errors[0]["response"]["status_code"]) == ("doc-2", 500)
    assert batch.id in [listed.id for listed in client.batches.list()]


def test_cancelled_batch_puts_every_line_in_the_error_file(client: OpenAI) -> None:
    uploaded = client.files.create(file=("b.jsonl", batch_line("d", "x").encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
    )
    batch = client.batches.cancel(batch.id)
    assert batch.status == "cancelling"
    batch, _ = wait_for(client, batch, {"cancelled"})
    assert batch.status == "cancelled" and batch.output_file_id is None
    error_line = json.loads(client.files.content(batch.error_file_id or "").text)
    assert error_line["error"]["code"] == "batch_cancelled"


def test_batch_with_mismatched_endpoint_fails_validation(client: OpenAI) -> None:
    uploaded = client.files.create(file=("b.jsonl", batch_line("d", "x").encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed"
    assert batch.errors and batch.errors.data and batch.errors.data[0].code == "mismatched_endpoint"


def named_text(name: str, number: str) -> list[dict[str, Any]]:
    """The user turn as the pipeline sends it: the file name line, then the text layer."""
    return [{"type": "input_text", "text": f"Document file name: {name}\n\n{invoice_text(number)}"}]


def test_ledger_counts_billed_and_usable_answers_per_document(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.set_faults("invalid_json:count=1")
    responses_create(client, named_text("a.pdf", "INV-A"))  # cut off: billed, not usable
    responses_create(client, named_text("a.pdf", "INV-A"))
    responses_create(client, named_text("b.pdf", "INV-B"))
    report = model_simulator.requests()
    ledgers = {ledger["document_name"]: ledger for ledger in report["documents"]}
    assert {name: (v["requests"], v["billed"], v["usable"]) for name, v in ledgers.items()} == {
        "a.pdf": (2, 2, 1),
        "b.pdf": (1, 1, 1),
    }
    assert ledgers["a.pdf"]["faults"] == {"invalid_json": 1}
    assert report["paid_twice"] == []

    responses_create(client, named_text("b.pdf", "INV-B"))  # the same document, answered again
    assert model_simulator.requests()["paid_twice"] == [ledgers["b.pdf"]["document"]]


def test_a_hang_the_client_gives_up_on_is_answered_by_nothing_and_not_billed(
    model_simulator: SimulatorControl,
) -> None:
    model_simulator.set_faults("hang:hang_seconds=30")
    with (
        OpenAI(
            base_url=model_simulator.base_url, api_key=TEST_API_KEY, max_retries=0, timeout=0.5
        ) as impatient,
        pytest.raises(openai.APITimeoutError),
    ):
        responses_create(impatient, named_text("a.pdf", "INV-A"))
    deadline = time.monotonic() + 5
    while model_simulator.requests()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    report = model_simulator.requests()
    (entry,) = report["requests"]
    assert (entry["fault"], entry["status_code"], entry["usable"]) == ("hang", 499, False)
    (ledger,) = report["documents"]
    assert (ledger["requests"], ledger["billed"], ledger["usable"]) == (1, 0, 0)


def test_fault_mix_and_seed_are_set_through_configure(model_simulator: SimulatorControl) -> None:
    model_simulator.configure(fault_mix="standard", seed=4)
    rules = model_simulator.faults()
    assert [(rule.kind, rule.rate, rule.count) for rule in rules] == [
        ("429", 0.2, None),
        ("500", 0.1, None),
        ("hang", 0.05, None),
        ("invalid_json", 0.03, None),
        ("refuse", 0.02, None),
    ]
    assert rules[0].retry_after == 1
    model_simulator.reset()  # back to the start-up configuration: no mix
    assert model_simulator.faults() == []


def test_request_log_carries_the_document_text_and_schema_fingerprint(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    responses_create(client, named_text("a.pdf", "INV-A"))
    chat_create(client, invoice_text("INV-C"))
    entries = model_simulator.requests(with_text=True)["requests"]
    assert "Invoice number: INV-A" in entries[0]["document_text"]
    assert entries[0]["document_name"] == "a.pdf" and entries[0]["schema_name"] == "Invoice"
    assert entries[0]["schema_sha256"] == entries[1]["schema_sha256"] != ""
    assert entries[0]["instructions_sha256"] == entries[1]["instructions_sha256"]  # none
    assert entries[0]["document"] != entries[1]["document"]
    assert "document_text" not in model_simulator.requests()["requests"][0]
