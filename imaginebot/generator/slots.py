"""Download slots: how many image downloads work at once, bot-wide, without capping downloads that only wait.

A slot is for a download that costs the bot something: sending its request, taking its answer, reading its body.
Hundreds of results arriving together would otherwise all do that at once (measured before the slots: an 885 ms
stall and 900 MB at 500 jobs), and each would finish later than if they took turns.

A storage server that is slow to answer (S3's time to first byte is tens to hundreds of milliseconds) costs nothing
while it is awaited, so a download still waiting for its answer after ``patience`` gives its slot back, and takes
one again, in turn, to read the body. Holding the slot through that wait capped a burst at ``slots`` downloads per
first-byte time: 16 slots and 200 ms made a 500-member burst's median 3 s longer (bench.burst --download-latency
0.2).

Every answer holds the first part of its body in memory until it is read (one read of the socket, up to 256 KB,
and aiohttp's buffer, which the client keeps small), so the bot keeps those few:

- A freed slot goes first to a download that has its answer and waits to read the body, and only then to a new
  download. When answers queue, the bot is what is slow (its threads busy re-encoding, say), and new requests would
  only hold more answers (bench.burst --oversize at 500: peak memory 166 MB; 376 MB with neither rule).
- At most ``max_waiting`` downloads wait for a server without a slot: when all of them are answered at once, they
  hold at most about ``max_waiting`` x 300 KB (75 MB with the 256 that go with 16 slots). 256 is what a
  500-member burst's answers need with 0.2 s to the first byte (bench.burst --download-latency 0.2: median 1.046
  of the services' latency; with 128, 1.073). With --oversize as well, peak memory was 184-204 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

# How long a download may wait for the server's answer before it gives its slot back. The benchmark's loopback fakes
# answer within it, even in a burst; a storage service across the internet does not.
PATIENCE = 0.005
# Downloads that may wait for their server without a slot, per slot.
WAITING_PER_SLOT = 16


class DownloadSlots:
    """At most ``slots`` downloads at work at once. Slots are handed out in turn (first come, first served), to
    downloads with their answer in hand before new ones."""

    def __init__(self, slots: int, *, patience: float = PATIENCE, max_waiting: int | None = None) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.free = slots
        self.patience = patience
        self.max_waiting = WAITING_PER_SLOT * slots if max_waiting is None else max_waiting
        # Downloads that gave their slot back and wait for their server.
        self.waiting_for_server = 0
        self._bodies: deque[asyncio.Future[None]] = deque()  # answered, waiting for a slot to read the body
        self._starts: deque[asyncio.Future[None]] = deque()  # new downloads waiting for a slot

    def hold(self) -> SlotHold:
        """A download's claim on a slot, not yet taken: ``async with slots.hold() as hold:`` takes it."""
        return SlotHold(self)

    @property
    def waiting(self) -> int:
        """Downloads waiting for a slot (to start, or to read a body)."""
        return sum(not waiter.done() for queue in (self._bodies, self._starts) for waiter in queue)

    async def acquire(self, *, body: bool) -> None:
        """Wait for a slot in turn: ``body`` for a download with its answer in hand, which goes first."""
        if self.free > 0 and not self._bodies and (body or not self._starts):
            self.free -= 1
            return
        queue = self._bodies if body else self._starts
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            raise

    def release(self) -> None:
        """Free a slot: to the longest-waiting answered download, else the longest-waiting new one."""
        for queue in (self._bodies, self._starts):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self.free += 1

    def may_give_back(self) -> bool:
        """Whether a download kept waiting by its server may give its slot back now (see the module's rules)."""
        return self.waiting_for_server < self.max_waiting


class SlotHold:
    """One download's slot: taken, given back while the server keeps it waiting, taken again for the body."""

    def __init__(self, slots: DownloadSlots) -> None:
        self._slots = slots
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for_server = False
        self.held = False

    async def __aenter__(self) -> SlotHold:
        await self._take(body=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.give_back()

    async def take_for_body(self) -> None:
        """Have a slot to read the body, the answer in hand (nothing to wait for if the slot was kept)."""
        await self._take(body=True)

    async def _take(self, *, body: bool) -> None:
        if not self.held:
            await self._slots.acquire(body=body)
            self.held = True

    def give_back(self) -> None:
        """Let another download have the slot (nothing if it is not held)."""
        if self.held:
            self.held = False
            self._slots.release()

    async def answer(self, request: Awaitable[T]) -> T:
        """Await the server's answer; the slot is given back meanwhile if it takes longer than the patience
        (``take_for_body`` has one again, before any new download, to read the body)."""
        self._timer = asyncio.get_running_loop().call_later(self._slots.patience, self._lose_patience)
        try:
            return await request
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._waiting_for_server:
                self._waiting_for_server = False
                self._slots.waiting_for_server -= 1

    def _lose_patience(self) -> None:
        if not self._slots.may_give_back():
            # As many wait for their servers as may: keep the slot for now, and look again later.
            self._timer = asyncio.get_running_loop().call_later(self._slots.patience, self._lose_patience)
            return
        self._timer = None
        self._waiting_for_server = True
        self._slots.waiting_for_server += 1
        self.give_back()
