"""The Batch API life cycle through the real OpenAI SDK against loopback simulators.

Phases are a fraction of a second; assertions that depend on when a poll lands hold whatever the
machine's load (they compare with what the simulator reported, not with wall-clock guesses).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from openai.types import Batch
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from extraction_pipeline.core.extraction.schemas import Invoice
from extraction_pipeline.core.model.prompt import output_format
from extraction_pipeline.simulator import SimulatorConfig, SimulatorControl, SimulatorServer
from extraction_pipeline_tests.simulator_fixture import TEST_API_KEY, invoice_text

FORMAT = output_format(Invoice)
ENDED = {"completed", "failed", "expired", "cancelled"}


def sdk(base_url: str) -> OpenAI:
    return OpenAI(
        base_url=base_url, api_key=TEST_API_KEY, max_retries=0, _strict_response_validation=True
    )


@pytest.fixture
def client(model_simulator: SimulatorControl) -> Iterator[OpenAI]:
    with sdk(model_simulator.base_url) as opened:
        yield opened


def responses_line(custom_id: str, text: str) -> dict[str, Any]:
    body = {
        "model": "gpt-4.1-mini",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
        "text": {"format": FORMAT.for_api("responses")},
    }
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": body}


def chat_line(custom_id: str, text: str) -> dict[str, Any]:
    body = {
        "model": "gpt-4.1-mini",
        "messages": [{"role": "user", "content": text}],
        "response_format": FORMAT.for_api("chat"),
    }
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def submit(client: OpenAI, lines: list[dict[str, Any]], endpoint: str = "/v1/responses") -> Batch:
    jsonl = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = client.files.create(file=("requests.jsonl", jsonl), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"run": "test"},
    )


def wait_until(client: OpenAI, batch: Batch, statuses: set[str]) -> Batch:
    deadline = time.monotonic() + 10
    while batch.status not in statuses and time.monotonic() < deadline:
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)
    assert batch.status in statuses
    return batch


def wait_for_first_answer(client: OpenAI, batch: Batch) -> Batch:
    deadline = time.monotonic() + 10
    while batch.request_counts is None or batch.request_counts.completed == 0:
        assert time.monotonic() < deadline and batch.status not in ENDED
        time.sleep(0.01)
        batch = client.batches.retrieve(batch.id)
    return batch


def result_lines(client: OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """A result file's lines by custom_id ({} when the batch has no such file)."""
    if file_id is None:
        return {}
    lines = [json.loads(text) for text in client.files.content(file_id).content.splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines)
    return by_id


def invoices(count: int) -> list[dict[str, Any]]:
    return [responses_line(f"doc-{i}", invoice_text(f"INV-{i:04d}")) for i in range(count)]


def billed_tokens(lines: dict[str, dict[str, Any]]) -> tuple[int, int]:
    usages = [line["response"]["body"]["usage"] for line in lines.values()]
    return sum(u["input_tokens"] for u in usages), sum(u["output_tokens"] for u in usages)


def test_completed_batch_answers_every_line_joined_by_custom_id(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(batch_phase_seconds=0.2)
    batch = wait_until(client, submit(client, invoices(5)), ENDED)

    assert batch.status == "completed" and batch.error_file_id is None
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 5, "failed": 0}
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.expires_at == batch.created_at + 24 * 3600 and batch.model == "gpt-4.1-mini"
    outputs = result_lines(client, batch.output_file_id)
    assert sorted(outputs) == [f"doc-{i}" for i in range(5)]
    for custom_id, line in outputs.items():
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = Response.model_validate(line["response"]["body"])
        number = Invoice.model_validate_json(body.output_text).invoice_number
        assert number == f"INV-{custom_id.removeprefix('doc-').zfill(4)}"
    assert batch.usage is not None
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == billed_tokens(outputs)
    assert client.files.retrieve(batch.output_file_id or "").purpose == "batch_output"


def test_chat_batch_lines_are_chat_completions(client: OpenAI) -> None:
    lines = [chat_line("a", invoice_text("INV-C1")), chat_line("b", invoice_text("INV-C2"))]
    batch = wait_until(client, submit(client, lines, "/v1/chat/completions"), ENDED)

    outputs = result_lines(client, batch.output_file_id)
    completion = ChatCompletion.model_validate(outputs["b"]["response"]["body"])
    content = completion.choices[0].message.content or ""
    assert Invoice.model_validate_json(content).invoice_number == "INV-C2"


def test_fault_rules_apply_to_each_line_like_online_calls(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.set_faults("500:match=INV-0001", "429:match=INV-0002", "refuse:match=INV-0003")
    lines = invoices(4)
    lines.append(responses_line("doc-hang", invoice_text("INV-H", extra_lines=("SIMULATE:HANG",))))
    batch = wait_until(client, submit(client, lines), ENDED)

    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 2, "failed": 3}
    outputs = result_lines(client, batch.output_file_id)
    errors = result_lines(client, batch.error_file_id)
    assert sorted(outputs) == ["doc-0", "doc-3"]
    assert {custom_id: line["response"]["status_code"] for custom_id, line in errors.items()} == {
        "doc-1": 500,
        "doc-2": 429,
        "doc-hang": 500,  # no client waits on a batch line: a hang ends as a server error
    }
    assert all(line["error"] is None for line in errors.values())
    assert errors["doc-2"]["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    refused = Response.model_validate(outputs["doc-3"]["response"]["body"])
    assert refused.output[0].content[0].type == "refusal"  # type: ignore[union-attr]
    assert batch.usage is not None
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == billed_tokens(outputs)
    # The ledger records the fault each line drew, as for online calls.
    faults = [d["faults"] for d in model_simulator.requests()["documents"] if d["faults"]]
    assert sorted(kind for fired in faults for kind in fired) == ["429", "500", "hang", "refuse"]


def test_cancel_mid_way_keeps_the_answered_lines_and_lists_the_rest(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(batch_phase_seconds=0.5)
    batch = wait_for_first_answer(client, submit(client, invoices(10)))
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert cancelling.request_counts is not None
    answered = cancelling.request_counts.completed

    batch = wait_until(client, cancelling, ENDED)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts is not None and batch.request_counts.completed == answered
    assert 0 < answered < 10, "the cancel should land while lines are still being answered"
    outputs = result_lines(client, batch.output_file_id)
    errors = result_lines(client, batch.error_file_id)
    assert len(outputs) == answered and sorted([*outputs, *errors]) == sorted(
        f"doc-{i}" for i in range(10)
    )
    # Lines run in input order, so the answered ones are the first ones.
    assert sorted(outputs, key=lambda c: int(c[4:])) == [f"doc-{i}" for i in range(answered)]
    for line in errors.values():
        assert line["response"] is None and line["error"]["code"] == "batch_cancelled"
    assert batch.usage is not None
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == billed_tokens(outputs)


def test_expiry_mid_way_keeps_the_lines_done_by_expires_at(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    # in_progress from 0.4 s to 0.8 s; expiry at 0.62 s, when 55% of it (3.3 of 6 lines) is done.
    model_simulator.configure(batch_phase_seconds=0.4, batch_expire_seconds=0.62)
    batch = wait_until(client, submit(client, invoices(6)), ENDED)

    assert batch.status == "expired"
    assert batch.expired_at == batch.expires_at and batch.in_progress_at is not None
    assert batch.finalizing_at is None and batch.completed_at is None
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 6, "completed": 3, "failed": 0}
    outputs = result_lines(client, batch.output_file_id)
    errors = result_lines(client, batch.error_file_id)
    assert sorted(outputs) == ["doc-0", "doc-1", "doc-2"]
    assert sorted(errors) == ["doc-3", "doc-4", "doc-5"]
    assert {line["error"]["code"] for line in errors.values()} == {"batch_expired"}
    assert all(line["response"] is None for line in errors.values())


def test_expiry_before_in_progress_runs_nothing(
    client: OpenAI, model_simulator: SimulatorControl
) -> None:
    model_simulator.configure(batch_phase_seconds=0.5, batch_expire_seconds=0.1)
    batch = wait_until(client, submit(client, invoices(2)), ENDED)

    assert batch.status == "expired" and batch.in_progress_at is None
    assert batch.output_file_id is None and batch.usage is not None
    assert batch.usage.total_tokens == 0
    assert len(result_lines(client, batch.error_file_id)) == 2
    assert model_simulator.requests()["documents"] == []  # nothing ran, nothing billed


def test_restarted_simulator_on_the_same_state_dir_keeps_files_and_batches(
    tmp_path: Path,
) -> None:
    config = SimulatorConfig(batch_phase_seconds=0.1, state_dir=str(tmp_path / "sim"))
    with SimulatorServer(config) as first, sdk(first.base_url) as client:
        done = wait_until(client, submit(client, invoices(2)), ENDED)
        done_output = client.files.content(done.output_file_id or "").content
        first.control().configure(batch_phase_seconds=0.2)
        open_batch = submit(client, invoices(3))
        assert open_batch.status == "validating"
    # Down for longer than the open batch needs (0.6 s): its schedule runs on without a process.
    time.sleep(0.7)

    with SimulatorServer(config) as second, sdk(second.base_url) as client:
        assert {b.id for b in client.batches.list()} == {done.id, open_batch.id}
        assert client.files.content(done.output_file_id or "").content == done_output
        assert client.files.retrieve(open_batch.input_file_id).purpose == "batch"
        resumed = client.batches.retrieve(open_batch.id)
        assert resumed.status == "completed" and resumed.created_at == open_batch.created_at
        assert resumed.request_counts is not None and resumed.request_counts.completed == 3
        assert sorted(result_lines(client, resumed.output_file_id)) == ["doc-0", "doc-1", "doc-2"]
        new = client.files.create(file=("x.jsonl", b"{}"), purpose="batch")
        assert new.id not in {done.input_file_id, done.output_file_id, open_batch.input_file_id}


def test_batch_open_across_a_restart_resumes_where_its_schedule_is(tmp_path: Path) -> None:
    config = SimulatorConfig(batch_phase_seconds=0.3, state_dir=str(tmp_path))
    with SimulatorServer(config) as first, sdk(first.base_url) as client:
        batch = wait_for_first_answer(client, submit(client, invoices(10)))
        assert batch.request_counts is not None
        before = batch.request_counts.completed
    with SimulatorServer(config) as second, sdk(second.base_url) as client:
        resumed = client.batches.retrieve(batch.id)
        assert resumed.request_counts is not None
        assert resumed.request_counts.completed >= before
        ended = wait_until(client, resumed, ENDED)
        assert ended.status == "completed"
        assert len(result_lines(client, ended.output_file_id)) == 10


def test_reset_forgets_the_state_dir_too(tmp_path: Path) -> None:
    config = SimulatorConfig(state_dir=str(tmp_path))
    with SimulatorServer(config) as first, sdk(first.base_url) as client:
        submit(client, invoices(1))
        first.control().reset()
    with SimulatorServer(config) as second, sdk(second.base_url) as client:
        assert list(client.batches.list()) == []
    assert [path.name for path in tmp_path.rglob("*") if path.is_file()] == []
