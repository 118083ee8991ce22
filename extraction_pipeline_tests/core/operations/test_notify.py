from extraction_pipeline.core.operations.notify import post_json, redact_url
from extraction_pipeline_tests.webhook import webhook_receiver


def test_payload_is_posted_as_json() -> None:
    with webhook_receiver() as (url, received):
        assert post_json(url, {"document_key": "a", "attempts": 2}) is True
    assert received == [{"document_key": "a", "attempts": 2}]


def test_server_errors_are_retried_then_reported_not_raised() -> None:
    waits: list[float] = []
    with webhook_receiver(status=503) as (url, received):
        assert (
            post_json(url, {"x": 1}, attempts=3, backoff_seconds=0.5, sleep=waits.append) is False
        )
    assert len(received) == 3
    assert waits == [0.5, 1.0]


def test_client_errors_are_not_retried() -> None:
    with webhook_receiver(status=404) as (url, received):
        assert post_json(url, {"x": 1}, attempts=3, sleep=lambda _: None) is False
    assert len(received) == 1


def test_unreachable_webhook_returns_false() -> None:
    assert post_json("http://127.0.0.1:9/x", {"x": 1}, attempts=2, sleep=lambda _: None) is False


def test_redacted_url_hides_the_token() -> None:
    assert redact_url("https://hooks.example.com/services/T000/B000/SECRET?x=1") == (
        "https://hooks.example.com/…"
    )
