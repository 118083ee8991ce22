from __future__ import annotations

import asyncio

import pytest

from extraction_pipeline.core.model.ratelimit import WINDOW_SECONDS, RateLimiter, SharedWindow
from extraction_pipeline.core.store import LocalObjectStore


class FakeTime:
    """A clock that only moves when the limiter sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter(fake: FakeTime, **limits: int | None) -> RateLimiter:
    return RateLimiter(clock=fake.clock, sleep=fake.sleep, **limits)  # type: ignore[arg-type]


async def take(limiter: RateLimiter, tokens: int = 0) -> None:
    async with limiter.acquire(tokens):
        pass


def test_requests_beyond_rpm_wait_for_the_window_to_slide() -> None:
    fake = FakeTime()

    async def scenario() -> None:
        rl = limiter(fake, rpm=3)
        for _ in range(3):
            await take(rl)
        assert fake.sleeps == []
        await take(rl)

    asyncio.run(scenario())
    assert fake.sleeps == [pytest.approx(WINDOW_SECONDS)]


def test_rpm_window_is_sliding_not_fixed() -> None:
    fake = FakeTime()

    async def scenario() -> None:
        rl = limiter(fake, rpm=2)
        await take(rl)
        fake.now += 30
        await take(rl)
        await take(rl)  # must wait for the first request (t=0) to leave: 30 s more

    asyncio.run(scenario())
    assert fake.sleeps == [pytest.approx(WINDOW_SECONDS - 30)]


def test_tokens_beyond_tpm_wait() -> None:
    fake = FakeTime()

    async def scenario() -> None:
        rl = limiter(fake, tpm=1000)
        await take(rl, 600)
        await take(rl, 600)

    asyncio.run(scenario())
    assert fake.sleeps == [pytest.approx(WINDOW_SECONDS)]


def test_request_larger_than_tpm_runs_alone_on_an_empty_window() -> None:
    fake = FakeTime()

    async def scenario() -> None:
        rl = limiter(fake, tpm=1000)
        await take(rl, 5000)
        await take(rl, 10)

    asyncio.run(scenario())
    assert fake.sleeps == [pytest.approx(WINDOW_SECONDS)]


def test_recorded_usage_replaces_the_estimate() -> None:
    fake = FakeTime()

    async def scenario() -> None:
        rl = limiter(fake, tpm=1000)
        async with rl.acquire(900) as permit:
            permit.record_tokens(100)
        await take(rl, 800)
        assert rl.window_usage() == (2, 900)

    asyncio.run(scenario())
    assert fake.sleeps == []


@pytest.mark.parametrize("value", [0, None])
def test_zero_or_none_means_unlimited(value: int | None) -> None:
    fake = FakeTime()

    async def scenario() -> None:
        rl = limiter(fake, rpm=value, tpm=value, max_concurrency=value)
        for _ in range(500):
            await take(rl, 10**6)

    asyncio.run(scenario())
    assert fake.sleeps == []


def test_concurrency_cap_bounds_permits_held_at_once() -> None:
    peak = 0
    held = 0

    async def worker(rl: RateLimiter) -> None:
        nonlocal peak, held
        async with rl.acquire(1):
            held += 1
            peak = max(peak, held)
            await asyncio.sleep(0.01)
            held -= 1

    async def scenario() -> None:
        rl = RateLimiter(max_concurrency=2)
        await asyncio.gather(*(worker(rl) for _ in range(7)))

    asyncio.run(scenario())
    assert peak == 2


def test_waiting_time_is_reported_on_the_permit() -> None:
    fake = FakeTime()
    waits: list[float] = []

    async def scenario() -> None:
        rl = limiter(fake, rpm=1)
        for _ in range(2):
            async with rl.acquire() as permit:
                waits.append(permit.waited_seconds)

    asyncio.run(scenario())
    assert waits == [0.0, pytest.approx(WINDOW_SECONDS)]


def test_the_window_handed_on_through_the_store_holds_the_rpm_across_runs(tmp_path) -> None:
    """A second run, in another process with another clock, waits for the first run's requests
    to leave the window instead of starting with an empty one."""
    store = LocalObjectStore(tmp_path)
    wall = [5_000.0]
    window = SharedWindow(store, wall_clock=lambda: wall[0])
    first, second = FakeTime(), FakeTime()
    second.now = 7.0  # another process: its monotonic clock has nothing to do with the first's

    async def first_run() -> None:
        rl = limiter(first, rpm=3)
        window.load_into(rl)  # nothing stored yet
        for _ in range(3):
            await take(rl, tokens=10)
        window.save_from(rl)

    async def second_run() -> None:
        rl = limiter(second, rpm=3)
        window.load_into(rl)
        assert rl.window_usage() == (3, 30)
        await take(rl)

    asyncio.run(first_run())
    wall[0] += 20.0  # the next run starts 20 s later
    asyncio.run(second_run())
    assert first.sleeps == []
    assert second.sleeps == [pytest.approx(WINDOW_SECONDS - 20)]


def test_a_damaged_or_stale_window_starts_empty(tmp_path) -> None:
    store = LocalObjectStore(tmp_path)
    fake = FakeTime()
    store.put(SharedWindow.NAME, b"{not json")
    rl = limiter(fake, rpm=3)
    SharedWindow(store).load_into(rl)
    assert rl.window_usage() == (0, 0)
    store.put(SharedWindow.NAME, b'{"saved_at": 0, "spends": [[1.0, 5]]}')  # long ago
    SharedWindow(store).load_into(rl)
    assert rl.window_usage() == (0, 0)
