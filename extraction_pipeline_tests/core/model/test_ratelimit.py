from __future__ import annotations

import asyncio
import contextlib

import pytest

from extraction_pipeline.core.model.ratelimit import (
    HAND_ON_LIMIT,
    WINDOW_SECONDS,
    LimitsUnavailable,
    RateLimiter,
)


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
        await asyncio.sleep(0)  # let the other tasks run, as a real sleep would


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


class FakeShared:
    """`SharedLimits` as another process sees them: `taken_elsewhere` slots are busy."""

    def __init__(self, taken_elsewhere: int = 0) -> None:
        self.taken = set(range(taken_elsewhere))
        self.peak = 0
        self.window: list[tuple[int, int]] = []  # (ticket, tokens)
        self.asked = 0

    def try_slot(self, capacity: int) -> int | None:
        self.asked += 1
        free = [slot for slot in range(capacity) if slot not in self.taken]
        if not free:
            return None
        self.taken.add(free[0])
        self.peak = max(self.peak, len(self.taken))
        return free[0]

    def release_slot(self, slot: int) -> None:
        self.taken.remove(slot)

    def admit(self, tokens: int, rpm: int | None, tpm: int | None) -> tuple[float, int | None]:
        if rpm is not None and len(self.window) >= rpm:
            return 30.0, None
        self.window.append((len(self.window), tokens))
        return 0.0, len(self.window) - 1

    def record_tokens(self, ticket: int, tokens: int) -> None:
        self.window[ticket] = (ticket, tokens)

    def close(self) -> None:
        pass


class InFlight:
    """Calls that hold a permit for one turn of the loop, and the most held at once."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    async def one(self, rl: RateLimiter) -> None:
        async with rl.acquire():
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(0)
            self.now -= 1


def test_shared_slots_bound_the_calls_of_every_process_together() -> None:
    """Two slots of a cap of 3 are held by another run: this one has one call in flight at a
    time, and asks again (sleeping, not spinning) until a slot is free."""
    fake, shared = FakeTime(), FakeShared(taken_elsewhere=2)
    calls = InFlight()

    async def scenario() -> None:
        rl = RateLimiter(max_concurrency=3, shared=shared, clock=fake.clock, sleep=fake.sleep)
        await asyncio.gather(*(calls.one(rl) for _ in range(4)))

    asyncio.run(scenario())
    assert calls.peak == 1
    assert fake.sleeps  # the others waited for the one slot
    assert shared.peak == 3 and shared.taken == {0, 1}  # every slot taken here was given back

    blocked = FakeShared(taken_elsewhere=3)

    async def waits() -> None:
        rl = RateLimiter(max_concurrency=3, shared=blocked, clock=fake.clock, sleep=fake.sleep)
        async with rl.acquire():
            pass

    fake.sleeps.clear()

    def free_one_after_some_polls(capacity: int) -> int | None:
        if blocked.asked == 5:
            blocked.taken.discard(2)
        return FakeShared.try_slot(blocked, capacity)

    blocked.try_slot = free_one_after_some_polls  # type: ignore[method-assign]
    asyncio.run(waits())
    assert len(fake.sleeps) == 5
    assert fake.sleeps == sorted(fake.sleeps) and max(fake.sleeps) <= 0.05  # backs off, bounded


def test_a_slot_goes_straight_to_the_next_waiter_of_its_process_then_back() -> None:
    """Six calls on a cap of 2: the two slots are taken once each, handed from call to call
    inside the process (no round trip for each call), and given back when no call waits."""
    fake, shared = FakeTime(), FakeShared()
    calls = InFlight()

    async def scenario() -> None:
        rl = RateLimiter(max_concurrency=2, shared=shared, clock=fake.clock, sleep=fake.sleep)
        await asyncio.gather(*(calls.one(rl) for _ in range(6)))
        assert shared.taken == set()  # nobody waits here any more: both slots are back
        async with rl.acquire():  # and a later call asks for one again
            assert len(shared.taken) == 1

    asyncio.run(scenario())
    assert calls.peak == 2 and shared.peak == 2
    assert shared.asked == 3  # two for the six calls, one for the later call
    assert not fake.sleeps
    assert shared.taken == set()


def test_a_slot_handed_on_often_goes_back_to_the_deployment() -> None:
    """Other processes' waiters get their turn: after HAND_ON_LIMIT calls in a row a slot is
    given back and asked for again, even while calls of this process wait."""
    fake, shared = FakeTime(), FakeShared()
    calls = InFlight()

    async def scenario() -> None:
        rl = RateLimiter(max_concurrency=1, shared=shared, clock=fake.clock, sleep=fake.sleep)
        await asyncio.gather(*(calls.one(rl) for _ in range(2 * HAND_ON_LIMIT + 3)))

    asyncio.run(scenario())
    assert shared.asked == 3  # 1 + HAND_ON_LIMIT calls per take: two full turns and a short one
    assert shared.taken == set()


def test_a_waiter_that_gives_up_leaves_no_slot_held() -> None:
    fake, shared = FakeTime(), FakeShared()

    async def scenario() -> None:
        rl = RateLimiter(max_concurrency=1, shared=shared, clock=fake.clock, sleep=fake.sleep)
        holder_in = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with rl.acquire():
                holder_in.set()
                await release.wait()

        async def waiter() -> None:
            async with rl.acquire():
                raise AssertionError("never gets the slot: cancelled first")

        first = asyncio.create_task(holder())
        await holder_in.wait()
        second = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        second.cancel()
        release.set()
        await first
        with contextlib.suppress(asyncio.CancelledError):
            await second

    asyncio.run(scenario())
    assert shared.taken == set()


def test_the_shared_window_admits_and_takes_the_real_token_count() -> None:
    fake, shared = FakeTime(), FakeShared()

    class GaveUp(Exception):
        pass

    async def sleep(seconds: float) -> None:
        await fake.sleep(seconds)
        if len(fake.sleeps) == 3:
            raise GaveUp

    async def scenario() -> None:
        rl = RateLimiter(rpm=2, tpm=1000, shared=shared, clock=fake.clock, sleep=sleep)
        for _ in range(2):
            async with rl.acquire(50) as permit:
                permit.record_tokens(7)
        assert rl.window_usage() == (0, 0)  # nothing counted locally: the window is shared
        with pytest.raises(GaveUp):
            await take(rl)  # the shared window is full: it waits

    asyncio.run(scenario())
    assert shared.window == [(0, 7), (1, 7)]
    assert fake.sleeps == [1.0, 1.0, 1.0]  # asks again within a second, not after 30 s


def test_while_the_shared_limits_are_unreachable_calls_wait_and_then_go() -> None:
    """A database restart: no call starts uncounted; they wait, then take their slot."""
    fake, shared = FakeTime(), FakeShared()
    outages = iter([True, True, False])

    def try_slot(capacity: int) -> int | None:
        if next(outages, False):
            raise LimitsUnavailable("OperationalError")
        return FakeShared.try_slot(shared, capacity)

    shared.try_slot = try_slot  # type: ignore[method-assign]

    async def scenario() -> None:
        rl = RateLimiter(max_concurrency=2, shared=shared, clock=fake.clock, sleep=fake.sleep)
        await take(rl)

    asyncio.run(scenario())
    assert fake.sleeps == [0.5, 1.0] and shared.taken == set()
