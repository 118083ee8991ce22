"""The deployment's model limits in Postgres: slots no two sessions share, given back when a
process dies, and one RPM/TPM window for every process."""

import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from extraction_pipeline.core.model.ratelimit import LimitsUnavailable
from extraction_pipeline.instance.model_limits import (
    PostgresLimits,
    deployment_limits,
)


def test_sessions_never_hold_more_slots_than_the_capacity_together(pg_url: str) -> None:
    with PostgresLimits(pg_url) as one, PostgresLimits(pg_url) as other:
        taken = [one.try_slot(3), other.try_slot(3), one.try_slot(3)]
        assert sorted(taken) == [0, 1, 2]  # type: ignore[type-var]
        assert other.try_slot(3) is None
        assert one.try_slot(3) is None  # a session does not take its own slot twice
        one.release_slot(taken[0])  # type: ignore[arg-type]
        assert other.try_slot(3) == taken[0]
        one.close()  # the session ends: its remaining slot is free
        assert other.try_slot(3) == taken[2]
        assert other.try_slot(3) is None


def test_a_killed_process_gives_its_slot_back(pg_url: str) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import time
                from extraction_pipeline.instance.model_limits import PostgresLimits
                limits = PostgresLimits({pg_url!r})
                assert limits.try_slot(1) == 0
                print("holding", flush=True)
                time.sleep(120)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with PostgresLimits(pg_url) as limits:
            assert limits.try_slot(1) is None
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            deadline = time.monotonic() + 10
            while (slot := limits.try_slot(1)) is None and time.monotonic() < deadline:
                time.sleep(0.05)  # the server notices the closed socket
            assert slot == 0
    finally:
        holder.kill()


def test_one_window_counts_requests_and_tokens_of_every_session(pg_url: str) -> None:
    with PostgresLimits(pg_url) as one, PostgresLimits(pg_url) as other:
        wait, ticket = one.admit(100, 2, None)
        assert (wait, ticket) == (0.0, ticket) and ticket is not None
        assert other.admit(100, 2, None)[1] is not None
        wait, refused = one.admit(100, 2, None)
        assert refused is None and 60 < wait <= 63  # the oldest leaves after 63 s
        # TPM: 200 tokens counted; an 850-token request waits under 1,000 ...
        assert other.admit(850, None, 1000)[1] is None
        one.record_tokens(ticket, 5)  # ... until the first one's real usage is known
        assert other.admit(850, None, 1000)[1] is not None


def test_a_request_larger_than_the_tpm_goes_alone_on_an_empty_window(pg_url: str) -> None:
    with PostgresLimits(pg_url) as limits:
        assert limits.admit(5000, None, 1000)[1] is not None
        wait, refused = limits.admit(10, None, 1000)
        assert refused is None and wait > 60


def test_an_instance_on_postgres_shares_its_limits(
    pg_url: str, instance: dg.DagsterInstance
) -> None:
    assert isinstance(deployment_limits(instance), PostgresLimits)
    with dg.instance_for_test() as local:
        assert deployment_limits(local) is None


@pytest.fixture(autouse=True)
def _quiet_postgres_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR")


def test_an_unreachable_server_says_so_instead_of_failing_the_call() -> None:
    with PostgresLimits("postgresql://nobody@127.0.0.1:1/nothing") as limits:
        with pytest.raises(LimitsUnavailable):
            limits.try_slot(2)
        with pytest.raises(LimitsUnavailable):
            limits.admit(10, 5, None)
        limits.release_slot(0)  # nothing held: nothing to do, no error
