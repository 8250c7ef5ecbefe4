"""A fair in-process queue: a bot-wide cap on jobs in flight, a per-member cap, round robin across members."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

log = logging.getLogger(__name__)

RunJob = Callable[[int], Awaitable[None]]
# Turn keys sort members never served (since they last had nothing to do) before members already served.
NOT_SERVED, SERVED = 0, 1


class JobQueue(Protocol):
    """What the rest of the bot needs from a queue. The job table stays the truth; this only orders the work."""

    def claim(self, member_id: int) -> bool: ...
    def release(self, member_id: int) -> None: ...
    def start_claimed(self, job_id: int, member_id: int) -> None: ...
    def submit(self, job_id: int, member_id: int, *, first: bool = False) -> None: ...
    def restore(self, jobs: list[tuple[int, int]], served: Collection[int] = ()) -> None: ...
    def cancel(self, job_id: int) -> bool: ...
    def position(self, job_id: int) -> int | None: ...
    def positions(self) -> dict[int, int]: ...
    def pause(self, seconds: float) -> None: ...
    @property
    def stopped(self) -> bool: ...
    def stop_starting(self) -> None: ...
    async def close(self) -> None: ...


class FairScheduler:
    """Starts queued jobs when there is room, one turn per member with work waiting, whatever the server.

    A turn goes to the waiting member served least recently, so one member's burst never delays another
    member's first job by more than the jobs already running.

    ``run`` is called with a job id once its turn comes; the scheduler counts it in flight until it returns.
    ``on_change`` is called (without arguments) whenever queue positions may have changed.

    A job that would start at once can have its place taken before it exists (``claim``), so that it is written
    to the job table as running straight away: ``start_claimed`` runs it, ``release`` gives the place back.
    """

    def __init__(
        self,
        *,
        run: RunJob,
        max_concurrent: int = 16,
        max_per_member: int = 2,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._run = run
        self.max_concurrent = max_concurrent
        self.max_per_member = max_per_member
        self._on_change = on_change
        # Each member's queued jobs, oldest first.
        self._waiting: dict[int, deque[int]] = {}
        # Whose turn comes first: members not served yet (in the order they started waiting), then the ones
        # served longest ago. A member's stamp is kept while they have work queued or in flight, so a member
        # whose job just started goes behind everyone else waiting, even if their next job was queued first.
        self._turn_key: dict[int, tuple[int, int]] = {}
        # When members who went idle were last served, kept while others wait (see _forget_idle); cleared once
        # nobody waits, so it holds at most the members served during one unbroken backlog.
        self._last_served: dict[int, int] = {}
        self._clock = itertools.count()
        self._member_of: dict[int, int] = {}
        # Jobs running or claimed, per member.
        self._in_flight: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._claimed = 0
        self._paused_until = 0.0
        self._wakeup: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def in_flight(self) -> int:
        """How many jobs are running now."""
        return len(self._tasks)

    @property
    def queued(self) -> int:
        """How many jobs are waiting for their turn."""
        return len(self._member_of)

    def claim(self, member_id: int) -> bool:
        """Take a place in flight for a job of ``member_id`` that is not written yet, if such a job would start
        at once: not paused, a free slot, the member under their limit and nobody waiting who could use it
        first. True: follow with ``start_claimed`` or ``release``."""
        if (
            self._closed
            or self.paused_for() > 0
            or self._busy() >= self.max_concurrent
            or self._in_flight.get(member_id, 0) >= self.max_per_member
            or member_id in self._waiting
            or self._next_member() is not None
        ):
            return False
        self._claimed += 1
        self._enter(member_id)
        return True

    def release(self, member_id: int) -> None:
        """Give back a place taken with ``claim`` (the job was refused or could not be written)."""
        self._claimed -= 1
        self._leave(member_id)
        self._start_what_fits()

    def start_claimed(self, job_id: int, member_id: int) -> None:
        """Run a job in the place ``claim`` took for it (nothing runs once the scheduler is closed)."""
        self._claimed -= 1
        if self._closed:
            self._leave(member_id)
            return
        self._turn_key[member_id] = (SERVED, next(self._clock))
        self._run_task(job_id, member_id)

    def submit(self, job_id: int, member_id: int, *, first: bool = False) -> None:
        """Queue a job for ``member_id``; it starts at once if there is room. ``first``: before the member's other
        queued jobs (a job that already had its place, put back after the bot's own failure)."""
        if self._closed or job_id in self._member_of:
            return
        if not self._waiting:
            self._last_served.clear()  # nobody waits: everyone starts afresh
        line = self._waiting.setdefault(member_id, deque())
        if first:
            line.appendleft(job_id)
        else:
            line.append(job_id)
        self._member_of[job_id] = member_id
        if member_id not in self._turn_key:
            # Served a moment ago and back already (a quick re-roll, or Cancel then /imagine): the old turn counts,
            # or they would go before everyone who has waited longer.
            served = self._last_served.pop(member_id, None)
            self._turn_key[member_id] = (NOT_SERVED, next(self._clock)) if served is None else (SERVED, served)
        self._start_what_fits()
        self._changed()

    def restore(self, jobs: list[tuple[int, int]], served: Collection[int] = ()) -> None:
        """Queue the jobs a restart found waiting, as (job id, member id): members take their turns in the order
        of their first job in ``jobs``, each member's jobs in the order given; the members in ``served`` had a
        turn already, so they come after the others, and after any member who starts waiting from now on, as
        they would have without the restart. Nothing starts until all are in, so the first round goes round
        robin too (submitted one by one, a member's jobs could fill their places in flight before the next
        member's first one is even queued)."""
        if self._closed:
            return
        for job_id, member_id in jobs:
            if job_id in self._member_of:
                continue
            self._waiting.setdefault(member_id, deque()).append(job_id)
            self._member_of[job_id] = member_id
            if member_id not in self._turn_key:
                self._turn_key[member_id] = (SERVED if member_id in served else NOT_SERVED, next(self._clock))
        self._start_what_fits()
        self._changed()

    def cancel(self, job_id: int) -> bool:
        """Take a queued job out of the queue. False if it is not queued (already started or unknown)."""
        member_id = self._member_of.pop(job_id, None)
        if member_id is None:
            return False
        jobs = self._waiting[member_id]
        jobs.remove(job_id)
        if not jobs:
            del self._waiting[member_id]
            self._forget_idle(member_id)
        self._changed()
        return True

    def positions(self) -> dict[int, int]:
        """Each queued job's position: how many jobs would start before it if nothing else arrived."""
        order: list[int] = []
        round_index = 0
        members = [self._waiting[member_id] for member_id in self._turn_order()]
        while True:
            emitted = False
            for jobs in members:
                if round_index < len(jobs):
                    order.append(jobs[round_index])
                    emitted = True
            if not emitted:
                break
            round_index += 1
        return {job_id: index for index, job_id in enumerate(order)}

    def position(self, job_id: int) -> int | None:
        """One job's position (see ``positions``), or None when it is not queued.

        Counted without ordering the whole queue (each new job asks for its own): the job is its member's
        r-th waiting job, so every member before it in turn order has up to r + 1 jobs ahead of it, every
        member after it up to r.
        """
        member_id = self._member_of.get(job_id)
        if member_id is None:
            return None
        rank = self._waiting[member_id].index(job_id)
        key = self._order_key(member_id)
        ahead = rank
        for other, jobs in self._waiting.items():
            if other != member_id:
                ahead += min(len(jobs), rank + 1 if self._order_key(other) < key else rank)
        return ahead

    def pause(self, seconds: float) -> None:
        """Start nothing new for ``seconds`` (the generator said 429); running jobs are not touched."""
        until = time.monotonic() + max(0.0, seconds)
        if until > self._paused_until:
            self._paused_until = until
            log.info("generator asked us to slow down: no new jobs start for %.1f s", seconds)

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - time.monotonic())

    @property
    def stopped(self) -> bool:
        """Whether ``stop_starting`` (or ``close``) was called."""
        return self._closed

    def stop_starting(self) -> None:
        """Start nothing more (jobs submitted from now on stay queued in the store); running jobs go on."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.cancel()

    async def close(self) -> None:
        """Stop starting jobs and cancel the running ones (their rows stay 'running' for recovery at start)."""
        self.stop_starting()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _start_what_fits(self) -> None:
        if self._closed:
            return
        wait = self.paused_for()
        if wait > 0:
            self._schedule_wakeup(wait)
            return
        started = False
        while self._busy() < self.max_concurrent:
            member_id = self._next_member()
            if member_id is None:
                break
            jobs = self._waiting[member_id]
            job_id = jobs.popleft()
            del self._member_of[job_id]
            if not jobs:
                del self._waiting[member_id]
            self._turn_key[member_id] = (SERVED, next(self._clock))
            self._launch(job_id, member_id)
            started = True
        if started:
            self._changed()

    def _busy(self) -> int:
        return len(self._tasks) + self._claimed

    def _turn_order(self) -> list[int]:
        """Members with queued work, in the order their turns come: a member at their cap of jobs in flight
        comes after the others (their next job waits for one of theirs to finish)."""
        return sorted(self._waiting, key=self._order_key)

    def _order_key(self, member_id: int) -> tuple[bool, tuple[int, int]]:
        return self._in_flight.get(member_id, 0) >= self.max_per_member, self._turn_key[member_id]

    def _next_member(self) -> int | None:
        """The member whose turn it is among those under their cap (one pass: it runs for every request)."""
        in_flight, cap = self._in_flight, self.max_per_member
        eligible = [member_id for member_id in self._waiting if in_flight.get(member_id, 0) < cap]
        return min(eligible, key=self._turn_key.__getitem__) if eligible else None

    def _forget_idle(self, member_id: int) -> None:
        """A member with nothing queued or in flight leaves the rotation. When they were served, that is kept
        while anyone else waits (see ``submit``); once nobody waits, everyone starts afresh (the maps stay small)."""
        if member_id not in self._waiting and member_id not in self._in_flight:
            kind, stamp = self._turn_key.pop(member_id, (NOT_SERVED, 0))
            if kind == SERVED and self._waiting:
                self._last_served[member_id] = stamp
        if not self._waiting:
            self._last_served.clear()

    def _launch(self, job_id: int, member_id: int) -> None:
        self._enter(member_id)
        self._run_task(job_id, member_id)

    def _run_task(self, job_id: int, member_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._run_one(job_id), name=f"job-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, member_id))

    async def _run_one(self, job_id: int) -> None:
        try:
            await self._run(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The runner reports its own failures; this only keeps one bad job from stopping the queue.
            log.exception("job %s: unexpected error in the job runner", job_id)

    def _finished(self, task: asyncio.Task[None], member_id: int) -> None:
        self._tasks.discard(task)
        self._leave(member_id)
        self._start_what_fits()

    def _enter(self, member_id: int) -> None:
        """One more of the member's jobs is in flight (running or claimed)."""
        self._in_flight[member_id] = self._in_flight.get(member_id, 0) + 1

    def _leave(self, member_id: int) -> None:
        """One of the member's jobs is no longer in flight."""
        left = self._in_flight.get(member_id, 1) - 1
        if left > 0:
            self._in_flight[member_id] = left
        else:
            self._in_flight.pop(member_id, None)
            self._forget_idle(member_id)

    def _schedule_wakeup(self, delay: float) -> None:
        if self._wakeup is not None and not self._wakeup.cancelled():
            return

        def wake() -> None:
            self._wakeup = None
            self._start_what_fits()

        self._wakeup = asyncio.get_running_loop().call_later(delay, wake)
