"""The extraction agent against the model simulator over real HTTP on loopback (no SDK mocks)."""

from __future__ import annotations

import asyncio
import itertools
import socket
from dataclasses import replace
from typing import Any

import pytest
from pydantic import BaseModel

from extraction_pipeline.core.extraction.schemas import Invoice, load_schema
from extraction_pipeline.core.model.agent import ExtractionAgent, extract_many
from extraction_pipeline.core.model.config import AgentConfig
from extraction_pipeline.core.model.costs import ModelPrice, PriceTable, TokenUsage, cost_usd
from extraction_pipeline.core.model.errors import ExtractionError
from extraction_pipeline.core.model.results import ExtractionResult
from extraction_pipeline.core.model.types import DocumentInput
from extraction_pipeline.simulator import SimulatorControl
from extraction_pipeline_tests.simulator_fixture import (
    TEST_API_KEY,
    invoice_text,
    text_pdf,
)


class PurchaseOrder(BaseModel):
    """A user schema, loaded by dotted path; `vendor_name` is not nullable on purpose."""

    vendor_name: str
    total: float | None = None
    currency: str | None = None


def document(number: str = "INV-0001", *, text_layer: bool = True, **kwargs: Any) -> DocumentInput:
    text = invoice_text(number, **kwargs)
    return DocumentInput(
        document_key=f"doc-{number.lower()}",
        file_name=f"{number}.pdf",
        pdf_bytes=text_pdf(text),
        page_texts=(text,) if text_layer else ("",),
        has_text_layer=text_layer,
    )


def config(sim: SimulatorControl, **overrides: Any) -> AgentConfig:
    base = AgentConfig(
        base_url=sim.base_url,
        api_key=TEST_API_KEY,
        timeout_seconds=5.0,
        backoff_base_seconds=0.05,
        backoff_max_seconds=0.2,
    )
    return replace(base, **overrides)


def extract(cfg: AgentConfig, doc: DocumentInput, schema: type[BaseModel] = Invoice) -> Any:
    async def run() -> ExtractionResult[Any]:
        async with ExtractionAgent(schema, cfg) as agent:
            return await agent.extract(doc)

    return asyncio.run(run())


def extraction_error(cfg: AgentConfig, doc: DocumentInput) -> ExtractionError:
    with pytest.raises(ExtractionError) as caught:
        extract(cfg, doc)
    return caught.value


def start_gaps(sim: SimulatorControl) -> list[float]:
    starts = [entry["started_at"] for entry in sim.requests()["requests"]]
    return [later - earlier for earlier, later in itertools.pairwise(starts)]


@pytest.mark.parametrize("api_mode", ["responses", "chat"])
@pytest.mark.parametrize("input_mode", ["text", "pdf"])
def test_extracts_the_invoice_in_each_api_and_input_mode(
    model_simulator: SimulatorControl, api_mode: str, input_mode: str
) -> None:
    result = extract(config(model_simulator, api_mode=api_mode, input_mode=input_mode), document())
    record = result.record
    assert isinstance(record, Invoice)
    assert (record.invoice_number, record.total, record.currency) == ("INV-0001", 119.0, "EUR")
    assert record.invoice_date.isoformat() == "2026-01-31"
    assert [item.amount for item in record.line_items] == [50.0, 50.0]
    call = result.call
    assert (call.api_mode, call.input_mode, call.attempts) == (api_mode, input_mode, 1)
    assert call.model == "gpt-4.1-mini"
    assert call.request_id and call.request_id.startswith("req_")
    assert call.document_key == "doc-inv-0001"
    endpoint = {"responses": "responses", "chat": "chat"}[api_mode]
    assert model_simulator.requests()["by_endpoint"] == {endpoint: 1}


@pytest.mark.parametrize("api_mode", ["responses", "chat"])
def test_images_mode_sends_rendered_pages_without_text(
    model_simulator: SimulatorControl, api_mode: str
) -> None:
    result = extract(config(model_simulator, api_mode=api_mode, input_mode="images"), document())
    # The simulator cannot read images, so it answers nulls: proof no text or PDF was sent.
    assert result.record.invoice_number is None
    assert result.call.input_mode == "images"
    assert model_simulator.requests()["requests"][0]["file_names"] == []


@pytest.mark.parametrize(("text_layer", "sent"), [(True, "text"), (False, "pdf")])
def test_auto_mode_sends_text_when_there_is_a_text_layer_else_the_pdf(
    model_simulator: SimulatorControl, text_layer: bool, sent: str
) -> None:
    result = extract(config(model_simulator), document(text_layer=text_layer))
    assert result.call.input_mode == sent
    assert result.record.total == 119.0
    file_names = model_simulator.requests()["requests"][0]["file_names"]
    assert file_names == ([] if text_layer else ["INV-0001.pdf"])


def test_retries_429_honouring_retry_after_ms(model_simulator: SimulatorControl) -> None:
    model_simulator.set_faults("429:count=2:retry_after_ms=300")
    result = extract(config(model_simulator), document())
    assert result.call.attempts == 3
    assert all(gap >= 0.29 for gap in start_gaps(model_simulator))
    assert result.call.elapsed_seconds >= 0.6


def test_retries_429_honouring_retry_after_seconds(model_simulator: SimulatorControl) -> None:
    model_simulator.set_faults("429:count=1:retry_after=1")
    result = extract(config(model_simulator), document())
    assert result.call.attempts == 2
    assert start_gaps(model_simulator)[0] >= 0.99


def test_retry_after_beyond_the_limit_is_raised_not_waited(
    model_simulator: SimulatorControl,
) -> None:
    model_simulator.set_faults("429:count=1:retry_after=30")
    error = extraction_error(config(model_simulator, max_retry_wait_seconds=5), document())
    assert (error.kind, error.retryable, error.retry_after_seconds) == ("rate_limited", True, 30)
    assert error.call is not None and error.call.attempts == 1


def test_server_error_then_success(model_simulator: SimulatorControl) -> None:
    model_simulator.set_faults("500:count=1")
    result = extract(config(model_simulator), document())
    assert result.call.attempts == 2
    assert [entry["status_code"] for entry in model_simulator.requests()["requests"]] == [500, 200]


def test_persistent_server_errors_end_as_a_transient_error_after_max_retries(
    model_simulator: SimulatorControl,
) -> None:
    model_simulator.set_faults("500:count=always")
    error = extraction_error(config(model_simulator, max_retries=2), document())
    assert (error.kind, error.retryable) == ("server_error", True)
    assert error.call is not None and error.call.attempts == 3
    assert error.request_id and error.request_id.startswith("req_")


def test_hang_times_out_and_is_retried(model_simulator: SimulatorControl) -> None:
    model_simulator.set_faults("hang:count=1:hang_seconds=10")
    result = extract(config(model_simulator, timeout_seconds=0.5), document())
    assert result.call.attempts == 2
    assert 0.5 <= result.call.latency_seconds < 3


def test_timeouts_on_every_attempt_raise_a_timeout_error(model_simulator: SimulatorControl) -> None:
    model_simulator.set_faults("hang:count=always:hang_seconds=10")
    error = extraction_error(
        config(model_simulator, timeout_seconds=0.3, max_retries=1), document()
    )
    assert (error.kind, error.retryable) == ("timeout", True)
    assert error.call is not None and error.call.attempts == 2


@pytest.mark.parametrize("api_mode", ["responses", "chat"])
def test_refusal_is_permanent_and_its_tokens_are_counted(
    model_simulator: SimulatorControl, api_mode: str
) -> None:
    model_simulator.set_faults("refuse:count=always")
    error = extraction_error(config(model_simulator, api_mode=api_mode), document())
    assert (error.kind, error.retryable) == ("refused", False)
    assert "can't help" in error.message
    assert error.call is not None and error.call.attempts == 1
    assert error.call.usage.input_tokens > 0 and error.call.usage.output_tokens > 0
    assert error.call.cost_usd is not None and error.call.cost_usd > 0


@pytest.mark.parametrize("api_mode", ["responses", "chat"])
def test_truncated_output_is_permanent(model_simulator: SimulatorControl, api_mode: str) -> None:
    model_simulator.set_faults("truncate:count=always")
    error = extraction_error(config(model_simulator, api_mode=api_mode), document())
    assert (error.kind, error.retryable) == ("truncated", False)
    assert error.call is not None and error.call.attempts == 1


def test_content_filter_counts_as_refusal(model_simulator: SimulatorControl) -> None:
    model_simulator.set_faults("content_filter:count=1")
    assert extraction_error(config(model_simulator), document()).kind == "refused"


@pytest.mark.parametrize("api_mode", ["responses", "chat"])
def test_invalid_json_is_repaired_with_one_more_request(
    model_simulator: SimulatorControl, api_mode: str
) -> None:
    single = extract(config(model_simulator, api_mode=api_mode), document()).call.usage
    model_simulator.reset()
    model_simulator.set_faults("invalid_json:count=1")
    result = extract(config(model_simulator, api_mode=api_mode), document())
    assert result.record.total == 119.0
    assert (result.call.attempts, result.call.repaired) == (2, True)
    # Both answers are billed: the repair round costs more than a single call.
    assert result.call.usage.input_tokens > 2 * single.input_tokens - 1
    assert result.call.usage.output_tokens > single.output_tokens


def test_invalid_json_twice_is_a_permanent_schema_violation(
    model_simulator: SimulatorControl,
) -> None:
    model_simulator.set_faults("invalid_json:count=2")
    error = extraction_error(config(model_simulator), document())
    assert (error.kind, error.retryable) == ("schema_violation", False)
    assert error.call is not None
    assert (error.call.attempts, error.call.repaired) == (2, True)
    assert "json" in error.message.lower()


def test_marker_in_the_document_triggers_the_fault(model_simulator: SimulatorControl) -> None:
    doc = document(extra_lines=("SIMULATE:INVALID_JSON",))
    assert extraction_error(config(model_simulator), doc).kind == "schema_violation"


def test_insufficient_quota_is_permanent(model_simulator: SimulatorControl) -> None:
    model_simulator.set_faults("quota:count=always")
    error = extraction_error(config(model_simulator), document())
    assert (error.kind, error.retryable) == ("quota", False)
    assert error.call is not None and error.call.attempts == 1


def test_wrong_endpoint_is_a_permanent_bad_request(model_simulator: SimulatorControl) -> None:
    root = model_simulator.base_url.removesuffix("/v1")
    error = extraction_error(replace(config(model_simulator), base_url=root), document())
    assert (error.kind, error.retryable) == ("bad_request", False)
    assert error.call is not None and error.call.attempts == 1


def test_unreachable_endpoint_is_a_transient_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = AgentConfig(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=TEST_API_KEY,
        max_retries=1,
        backoff_base_seconds=0.01,
    )
    error = extraction_error(cfg, document())
    assert (error.kind, error.retryable) == ("connection", True)
    assert error.call is not None and error.call.attempts == 2


def test_usage_and_cost_follow_the_price_table(model_simulator: SimulatorControl) -> None:
    model_simulator.configure(cached_input_tokens=100)
    prices = PriceTable({"gpt-4.1-mini": ModelPrice(input=1.0, cached_input=0.5, output=4.0)})
    result = extract(config(model_simulator, prices=prices), document())
    usage = result.call.usage
    assert usage.cached_input_tokens == 100
    assert usage.input_tokens > 100 and usage.output_tokens > 0
    expected = ((usage.input_tokens - 100) * 1.0 + 100 * 0.5 + usage.output_tokens * 4.0) / 1e6
    assert result.call.cost_usd == pytest.approx(expected)
    assert result.call.cost_usd == cost_usd(usage, "gpt-4.1-mini", prices)


def test_model_without_a_price_has_no_cost(model_simulator: SimulatorControl) -> None:
    result = extract(config(model_simulator, model="local-llama-3"), document())
    assert result.call.model == "local-llama-3"
    assert result.call.cost_usd is None
    assert result.call.usage != TokenUsage()


def test_user_schema_by_dotted_path(model_simulator: SimulatorControl) -> None:
    schema = load_schema("extraction_pipeline_tests.core.model.test_agent:PurchaseOrder")
    result = extract(config(model_simulator), document(), schema)
    assert result.record == PurchaseOrder(
        vendor_name="Acme Supplies GmbH", total=119.0, currency="EUR"
    )
    assert result.call.schema_name == "PurchaseOrder"


def test_extract_many_isolates_a_failing_document(model_simulator: SimulatorControl) -> None:
    model_simulator.set_faults("refuse:match=INV-0003:count=always")
    docs = [document(f"INV-000{i}") for i in range(1, 6)]
    seen: list[str] = []
    outcomes = asyncio.run(
        extract_many(
            docs, Invoice, config(model_simulator), on_outcome=lambda o: seen.append(o.document_key)
        )
    )
    assert [o.document_key for o in outcomes] == [d.document_key for d in docs]
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    failed = outcomes[2]
    assert failed.error is not None and failed.error.kind == "refused"
    assert failed.call is not None and failed.call.usage.output_tokens > 0
    assert [o.result.record.invoice_number for o in outcomes if o.result] == [
        "INV-0001",
        "INV-0002",
        "INV-0004",
        "INV-0005",
    ]
    assert sorted(seen) == sorted(d.document_key for d in docs)


def test_extract_many_respects_max_concurrency(model_simulator: SimulatorControl) -> None:
    model_simulator.configure(latency_seconds=0.25)
    docs = [document(f"INV-{i:04d}") for i in range(9)]
    outcomes = asyncio.run(extract_many(docs, Invoice, config(model_simulator, max_concurrency=3)))
    assert all(o.ok for o in outcomes)
    report = model_simulator.requests()
    assert report["count"] == 9
    assert report["peak_in_flight"] == 3


def test_extract_many_rpm_limit_spaces_requests(model_simulator: SimulatorControl) -> None:
    # rpm=2 lets two requests start at once; a third would wait a minute: prove by timing out.
    docs = [document(f"INV-{i:04d}") for i in range(3)]

    async def run() -> None:
        await asyncio.wait_for(extract_many(docs, Invoice, config(model_simulator, rpm=2)), 1.0)

    with pytest.raises(TimeoutError):
        asyncio.run(run())
    assert model_simulator.requests()["count"] == 2


def test_config_repr_hides_the_api_key() -> None:
    assert "sk-secret" not in repr(AgentConfig(api_key="sk-secret"))


def test_missing_api_key_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = AgentConfig(base_url="http://127.0.0.1:9/v1")
    assert extraction_error(cfg, document()).kind == "auth"


@pytest.mark.parametrize(
    "bad",
    [{"api_mode": "rest"}, {"input_mode": "ocr"}, {"max_concurrency": 0}, {"timeout_seconds": 0}],
)
def test_invalid_config_is_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AgentConfig(**bad)
