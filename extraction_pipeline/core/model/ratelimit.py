"""Client-side rate limiting: requests per minute, tokens per minute and a concurrency cap.

A semaphore alone bounds how many calls are in flight, not how many start per minute: with fast
answers it happily exceeds an RPM quota. `RateLimiter` combines the three:

- at most `max_concurrency` permits are held at once;
- at most `rpm` permits start within any sliding 60 s window (kept 3 s longer, see below);
- the token estimates of the permits started within the window sum to at most `tpm`.

A request whose own estimate exceeds `tpm` is let through alone on an empty window, otherwise it
could never start. After a call, `Permit.record_tokens` replaces the estimate with the real usage
so the window reflects what the provider actually counted.

The provider's quota is per account, so in a deployment the limits hold for every process
together: given `shared` (`SharedLimits`, kept in the deployment's Postgres), a permit also takes
one of `max_concurrency` deployment-wide slots and its place in the one shared window; the
process-local semaphore then only stops one process from asking for more than the whole cap.

Clock and sleep are injectable so tests run the algorithm without waiting. A limiter belongs to
the event loop that first uses it (it holds asyncio primitives): share it within one loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# The provider counts a request per minute from when it *arrives*; a request admitted here
# arrives a little later, and how much later varies (a process starting its client on a busy
# machine: a second or two). A permit therefore holds its place in the window this much longer,
# so requests admitted exactly a minute apart cannot arrive within one minute.
ARRIVAL_MARGIN_SECONDS = 3.0
WINDOW_SECONDS = 60.0 + ARRIVAL_MARGIN_SECONDS


class _Spend:
    """Tokens charged to the window by one permit; mutable so the estimate can be corrected."""

    __slots__ = ("started_at", "tokens")

    def __init__(self, started_at: float, tokens: int) -> None:
        self.started_at = started_at
        self.tokens = tokens


class LimitsUnavailable(Exception):
    """The shared limits cannot be reached just now (their database is restarting)."""


class SharedLimits(Protocol):
    """Slots and a rate window shared by every process of a deployment (see module docstring).
    Calls are short and synchronous; a process that dies gives its slots back. `try_slot` and
    `admit` raise `LimitsUnavailable` while the shared store cannot be reached."""

    def try_slot(self, capacity: int) -> int | None:
        """Take a free slot of `capacity`, or None when all are taken."""
        ...

    def release_slot(self, slot: int) -> None: ...

    def admit(self, tokens: int, rpm: int | None, tpm: int | None) -> tuple[float, int | None]:
        """Start a request of `tokens` now if the shared window has room: (0, its ticket);
        else (seconds to wait before asking again, None)."""
        ...

    def record_tokens(self, ticket: int, tokens: int) -> None:
        """Replace a started request's token estimate with its real usage."""
        ...

    def close(self) -> None:
        """Give back every slot still held (asking again later starts afresh)."""
        ...


class Permit:
    """Held while one request is in flight."""

    def __init__(self, record: Callable[[int], None], waited_seconds: float) -> None:
        self._record = record
        self.waited_seconds = waited_seconds

    def record_tokens(self, tokens: int) -> None:
        """Replace the up-front token estimate with the tokens the call really used."""
        self._record(max(tokens, 0))


class RateLimiter:
    """RPM + TPM sliding-window limiter with a concurrency cap. 0 or None means unlimited."""

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        shared: SharedLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._capacity = max_concurrency or None
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._shared = shared
        # One waiter of this process asks the shared slots at a time, in arrival order.
        self._slot_queue = asyncio.Lock()
        # Shared slots held for this process's waiters (slot, times handed on), and how many
        # permits still want one.
        self._spare: list[tuple[int, int]] = []
        self._wanting = 0
        self._rpm = rpm or None
        self._tpm = tpm or None
        self._clock = clock
        self._sleep = sleep
        self._window: deque[_Spend] = deque()
        # Waiters are served in arrival order, so a big request is not starved by small ones.
        self._gate = asyncio.Lock()

    @asynccontextmanager
    async def acquire(self, estimated_tokens: int = 0) -> AsyncIterator[Permit]:
        """Wait for a concurrency slot and for room in the RPM/TPM window, then hold a permit."""
        start = self._clock()
        self._wanting += 1
        wanting = True
        try:
            if self._slots is not None:
                await self._slots.acquire()
        except BaseException:
            self._wanting -= 1
            self._give_back_spares()
            raise
        slot: tuple[int, int] | None = None
        try:
            if self._shared is not None and self._capacity is not None:
                slot = await self._shared_slot(self._shared, self._capacity)
            self._wanting -= 1
            wanting = False
            record = await self._admit(max(estimated_tokens, 0))
            yield Permit(record, waited_seconds=self._clock() - start)
        finally:
            if wanting:
                self._wanting -= 1
            if slot is not None:
                self._hand_on(*slot)
            self._give_back_spares()
            if self._slots is not None:
                self._slots.release()

    async def _shared_slot(self, shared: SharedLimits, capacity: int) -> tuple[int, int]:
        """A shared slot and how many times this process has handed it on already."""
        async with self._slot_queue:
            delay = SLOT_POLL_SECONDS[0]
            while True:
                if self._spare:
                    return self._spare.pop()
                slot = await self._while_unavailable(shared.try_slot, capacity)
                if slot is not None:
                    return slot, 0
                await self._sleep(delay)
                delay = min(delay * 2, SLOT_POLL_SECONDS[1])

    def _hand_on(self, slot: int, handed: int) -> None:
        """A shared slot this process is done with goes straight to its next waiter (no round
        trip to the shared store), up to HAND_ON_LIMIT times in a row; then, or with no waiter
        here, back to the deployment, where other processes' waiters take their turn."""
        assert self._shared is not None
        if self._wanting and handed < HAND_ON_LIMIT:
            self._spare.append((slot, handed + 1))
        else:
            self._shared.release_slot(slot)

    def _give_back_spares(self) -> None:
        while self._spare and self._wanting == 0:
            assert self._shared is not None
            self._shared.release_slot(self._spare.pop()[0])

    async def _while_unavailable(self, ask: Callable[..., T], *args: Any) -> T:
        """`ask(*args)`; while the shared limits cannot be reached (a database restart), wait
        and ask again, for up to UNAVAILABLE_SECONDS: no call starts uncounted meanwhile."""
        waited, delay = 0.0, 0.5
        while True:
            try:
                return ask(*args)
            except LimitsUnavailable:
                if waited >= UNAVAILABLE_SECONDS:
                    raise
                log.warning("model limits unavailable; asking again in %.1f s", delay)
            await self._sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)

    def window_usage(self) -> tuple[int, int]:
        """(requests, tokens) started within this process's window."""
        self._prune(self._clock())
        return len(self._window), sum(spend.tokens for spend in self._window)

    async def _admit(self, tokens: int) -> Callable[[int], None]:
        """Wait for room in the window; returns how to correct the request's token count."""
        if self._rpm is None and self._tpm is None:
            return _ignore
        if self._shared is not None:
            return await self._admit_shared(self._shared, tokens)
        spend = await self._admit_local(tokens)

        def record(used: int) -> None:
            spend.tokens = used

        return record

    async def _admit_shared(self, shared: SharedLimits, tokens: int) -> Callable[[int], None]:
        async with self._gate:
            while True:
                wait, ticket = await self._while_unavailable(
                    shared.admit, tokens, self._rpm, self._tpm
                )
                if ticket is not None:
                    return lambda used: shared.record_tokens(ticket, used)
                # Ask again within a second: other processes' corrections may free room.
                await self._sleep(min(max(wait, SLOT_POLL_SECONDS[0]), 1.0))

    async def _admit_local(self, tokens: int) -> _Spend:
        async with self._gate:
            while True:
                now = self._clock()
                self._prune(now)
                wait = self._wait_needed(now, tokens)
                if wait <= 0:
                    spend = _Spend(now, tokens)
                    self._window.append(spend)
                    return spend
                await self._sleep(wait)

    def _prune(self, now: float) -> None:
        while self._window and self._window[0].started_at <= now - WINDOW_SECONDS:
            self._window.popleft()

    def _wait_needed(self, now: float, tokens: int) -> float:
        """Seconds until enough of the window expires to admit a request of `tokens`."""
        wait = 0.0
        if self._rpm is not None and len(self._window) >= self._rpm:
            oldest_blocking = self._window[len(self._window) - self._rpm]
            wait = max(wait, oldest_blocking.started_at + WINDOW_SECONDS - now)
        if self._tpm is not None and self._window:
            excess = sum(spend.tokens for spend in self._window) + tokens - self._tpm
            for spend in self._window:
                if excess <= 0:
                    break
                excess -= spend.tokens
                wait = max(wait, spend.started_at + WINDOW_SECONDS - now)
        return wait


def _ignore(tokens: int) -> None:
    pass


# A waiter for a shared slot asks again after this long, doubling up to the second figure: a
# slot freed elsewhere is taken within tens of milliseconds, and a full deployment is asked at
# most 20 times a second per process.
SLOT_POLL_SECONDS = (0.005, 0.05)
# A slot goes from call to call inside a process at most this many times before it goes back to
# the deployment: a run with a long queue saves the round trips without keeping other runs (a
# single dropped PDF behind a backfill) from the model.
HAND_ON_LIMIT = 8
# As long as event writes wait for a restarting database (instance/event_log.py).
UNAVAILABLE_SECONDS = 120.0
