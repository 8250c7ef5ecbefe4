"""Reading new interactions at the pace the bot answers them, so that a burst is served in the order it came.

discord.py reads every gateway message already received before any of the work it starts can run. After a burst
(hundreds of ``/imagine`` sent within the same moment) it makes a task per interaction, and only then do those
tasks run, all in step, each a little per turn of the event loop: the first member's request reaches the
generator hardly sooner than the last one's (the connection it opens waits behind everyone else's work), and
the results later come back as one dense wave that waits to be posted.

Here the reader waits, after a message, while more than ``depth`` interactions are between their event and their
first response, until one of them is answered: the interactions then go through the bot in the order they came,
a few dozen at a time. Measured with ``bench/burst.py`` (500 members at once, ``bench.compare``, 6 runs each):
median end to end 1.058 -> 1.043 of the generator's latency, p99 1.086 -> 1.074, largest event-loop stall 32 ->
14 ms, at the same CPU per job; the last first responses come about 25 ms later (p99 293 -> 320 ms).

The reader waits only while the bot is busy answering, never for something slow elsewhere: if nothing is answered
within ``hold_at_most`` (the interactions wait on a slow database, or on Discord), it stops waiting for ``rest``
seconds; and since an interaction not read yet cannot be deferred, the waits add at most ``max_added_delay`` in
all before it rests. An interaction never answered stops counting after ``forget_after`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from discord.gateway import DiscordWebSocket
from discord.state import ConnectionState
from discord.webhook.async_ import AsyncWebhookAdapter

log = logging.getLogger(__name__)

# Interactions between event and first response before the reader waits: enough for two of the store's batches
# (16 reservations each) on their way at once; fewer did no better (bench.burst, depths 16 to 64).
DEPTH = 32
# One wait lasts at most this long: if nothing was answered by then, the bot is waiting on something other than
# its own CPU (a slow database, Discord), and the reader does not wait again for REST seconds.
HOLD_AT_MOST = 0.050
# An interaction not read yet cannot be deferred: the waits add at most this much to anyone's wait before the
# reader rests (a 500-member burst adds about 0.2 s in all, spread over its members).
MAX_ADDED_DELAY = 0.5
REST = 1.0
# Discord's window for a first response is 3 s: an interaction still unanswered then never will be.
FORGET_AFTER = 3.0


class IntakePacer:
    """Counts interactions from their event to their first response; ``pace`` waits while too many are open."""

    def __init__(
        self,
        *,
        depth: int = DEPTH,
        hold_at_most: float = HOLD_AT_MOST,
        max_added_delay: float = MAX_ADDED_DELAY,
        rest: float = REST,
        forget_after: float = FORGET_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.depth = depth
        self._hold_at_most = hold_at_most
        self._max_added_delay = max_added_delay
        self._rest = rest
        self._forget_after = forget_after
        self._clock = clock
        self._open: dict[int, float] = {}  # interaction id -> when its event was read, oldest first
        self._waiters: list[asyncio.Future[bool]] = []
        self._held = 0.0  # seconds waited since the bot last caught up (or the reader last rested)
        self._resting_until = 0.0
        self.holds = 0  # how often the reader waited
        self.rests = 0  # ... and how often it then stopped waiting for a while

    @property
    def open(self) -> int:
        """Interactions read and not answered yet."""
        return len(self._open)

    def received(self, interaction_id: int) -> None:
        """An interaction's event was read."""
        self._open[interaction_id] = self._clock()

    def answered(self, interaction_id: int) -> None:
        """An interaction's first response is on its way."""
        if self._open.pop(interaction_id, None) is None:
            return
        if not self._open:
            self._held = 0.0  # caught up: the next burst starts afresh
        if len(self._open) <= self.depth:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(True)

    async def pace(self) -> None:
        """After each gateway message: return at once, or once the bot has answered enough of what it read."""
        if len(self._open) <= self.depth:
            return
        start = self._clock()
        if start < self._resting_until:
            return
        self._forget_stale(start)
        if len(self._open) <= self.depth:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(min(self._hold_at_most, self._max_added_delay - self._held), _give_up, waiter)
        self._waiters.append(waiter)
        self.holds += 1
        try:
            caught_up = await waiter
        finally:
            timer.cancel()
            self._waiters.remove(waiter)
        now = self._clock()
        self._held += now - start
        if not caught_up or self._held >= self._max_added_delay:
            self.rests += 1
            self._held = 0.0
            self._resting_until = now + self._rest
            log.debug("gateway reading: not waiting for %.1f s (%d waits so far)", self._rest, self.holds)

    def _forget_stale(self, now: float) -> None:
        while self._open:
            interaction_id, read_at = next(iter(self._open.items()))
            if now - read_at < self._forget_after:
                return
            del self._open[interaction_id]


def _give_up(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


# The pacer the hooks below count with (the last one given to pace_gateway_reading).
_current: list[IntakePacer] = []


def pace_gateway_reading(pacer: IntakePacer) -> None:
    """Hook ``pacer`` into discord.py, for every client of this process (call it before the client is created):
    an interaction counts from its INTERACTION_CREATE until its first response (reply, deferral, modal, update or
    autocomplete) is sent, and the gateway reader paces itself after each message. Called again, the new pacer
    takes the old one's place."""
    _current[:] = [pacer]
    read = getattr(DiscordWebSocket, "received_message", None)
    parse = getattr(ConnectionState, "parse_interaction_create", None)
    respond = getattr(AsyncWebhookAdapter, "create_interaction_response", None)
    if getattr(read, "paced", False):
        return
    if not (callable(read) and callable(parse) and callable(respond)):
        # Another discord.py than the ones this was written for (2.6, 2.7): the bot works as well without.
        log.warning("this discord.py has no hooks for pacing the gateway reading: a burst is read all at once")
        return
    log.debug("gateway reading paced: at most %d interactions waiting for their first response", pacer.depth)

    async def received_message(self: DiscordWebSocket, msg: Any, /) -> None:
        await read(self, msg)
        await _current[0].pace()

    def parse_interaction_create(self: ConnectionState, data: Any) -> None:
        _current[0].received(int(data["id"]))
        parse(self, data)

    def create_interaction_response(
        self: AsyncWebhookAdapter, interaction_id: int, token: str, **kwargs: Any
    ) -> Coroutine[Any, Any, Any]:
        _current[0].answered(int(interaction_id))
        return respond(self, interaction_id, token, **kwargs)

    received_message.paced = True  # type: ignore[attr-defined]
    DiscordWebSocket.received_message = received_message  # type: ignore[method-assign]
    # ConnectionState collects its parse_* methods when it is created: hence "before the client is created".
    ConnectionState.parse_interaction_create = parse_interaction_create  # type: ignore[method-assign]
    AsyncWebhookAdapter.create_interaction_response = create_interaction_response  # type: ignore[method-assign]
