"""Client-side rate limiting: requests per minute, tokens per minute and a concurrency cap.

A semaphore alone bounds how many calls are in flight, not how many start per minute: with fast
answers it happily exceeds an RPM quota. `RateLimiter` combines the three:

- at most `max_concurrency` permits are held at once;
- at most `rpm` permits start within any sliding 60 s window (kept 3 s longer, see below);
- the token estimates of the permits started within the window sum to at most `tpm`.

A request whose own estimate exceeds `tpm` is let through alone on an empty window, otherwise it
could never start. After a call, `Permit.record_tokens` replaces the estimate with the real usage
so the window reflects what the provider actually counted.

Clock and sleep are injectable so tests run the algorithm without waiting. A limiter belongs to
the event loop that first uses it (it holds asyncio primitives): share it within one loop only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

from extraction_pipeline.core.store import ObjectStore

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


class Permit:
    """Held while one request is in flight."""

    def __init__(self, spend: _Spend, waited_seconds: float) -> None:
        self._spend = spend
        self.waited_seconds = waited_seconds

    def record_tokens(self, tokens: int) -> None:
        """Replace the up-front token estimate with the tokens the call really used."""
        self._spend.tokens = max(tokens, 0)


class RateLimiter:
    """RPM + TPM sliding-window limiter with a concurrency cap. 0 or None means unlimited."""

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
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
        if self._slots is not None:
            await self._slots.acquire()
        try:
            spend = await self._admit(max(estimated_tokens, 0))
            yield Permit(spend, waited_seconds=self._clock() - start)
        finally:
            if self._slots is not None:
                self._slots.release()

    @property
    def limits_rate(self) -> bool:
        return self._rpm is not None or self._tpm is not None

    def recent_spends(self) -> list[tuple[float, int]]:
        """(age in seconds, tokens) of the permits started within the window."""
        now = self._clock()
        self._prune(now)
        return [(now - spend.started_at, spend.tokens) for spend in self._window]

    def carry_over(self, spends: Iterable[tuple[float, int]]) -> None:
        """Count permits started elsewhere (another run), given as (age in seconds, tokens)."""
        now = self._clock()
        earlier = [_Spend(now - age, tokens) for age, tokens in spends if 0 <= age < WINDOW_SECONDS]
        self._window = deque(sorted([*earlier, *self._window], key=lambda s: s.started_at))

    def window_usage(self) -> tuple[int, int]:
        """(requests, tokens) started within the current window."""
        self._prune(self._clock())
        return len(self._window), sum(spend.tokens for spend in self._window)

    async def _admit(self, tokens: int) -> _Spend:
        if self._rpm is None and self._tpm is None:
            return _Spend(self._clock(), tokens)
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


class SharedWindow:
    """The RPM/TPM window handed from one extraction step to the next through an object store.

    A limiter lives as long as one step; without this, every run would start with an empty
    window and two runs in a row could together exceed the per-minute quota. Ages, not clock
    readings, are stored, so the window survives a change of process.
    """

    NAME = "limits/model_window.json"

    def __init__(self, store: ObjectStore, wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._wall_clock = wall_clock

    def load_into(self, limiter: RateLimiter) -> None:
        try:
            data = json.loads(self.store.get(self.NAME))
            elapsed = self._wall_clock() - float(data["saved_at"])
            spends = [(float(age) + elapsed, int(tokens)) for age, tokens in data["spends"]]
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError):
            return  # a damaged file only means one window starts empty
        limiter.carry_over(spends)

    def save_from(self, limiter: RateLimiter) -> None:
        payload = {"saved_at": self._wall_clock(), "spends": limiter.recent_spends()}
        self.store.put(self.NAME, json.dumps(payload).encode())
