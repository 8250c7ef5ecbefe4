"""The life of a generation job: accepted and paid for, queued, generated, fitted, delivered or refunded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import aiohttp

from imaginebot.credits import QualityWeights, request_cost
from imaginebot.delivery import (
    DeliverableImage,
    SourceImage,
    file_limit,
    fit_for_upload,
    plan_messages,
)
from imaginebot.generator import DownloadedImage, GenerationResult, GeneratorClient, GeneratorError, RateLimited
from imaginebot.options import ImagineOptions
from imaginebot.policy import Policy
from imaginebot.scheduler import FairScheduler
from imaginebot.store import BudgetCheck, Job, NewJob, Refused, Reserved, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

# Back-off when a 429 names no Retry-After (a CDN's HTML page usually does not): 5 s, 10 s, 20 s ... capped.
BACKOFF_START = 5.0
BACKOFF_CAP = 120.0
# A Retry-After is obeyed within these bounds: "0" (or a date already past) must not turn into a burst of requests,
# and a far-off one (a typo, a year-2100 date) must not stop every job for good; after the longest wait the request
# is simply sent again, and a new 429 says how much longer.
MIN_RATE_LIMIT_WAIT = 1.0
MAX_RATE_LIMIT_WAIT = 600.0
# How long a stopping bot lets results already being posted finish (docker stop waits 10 s before it kills).
DELIVERY_GRACE_SECONDS = 8.0
# Waits between tries to record a delivered job when the store fails (a lost connection, a locked file).
RECORD_RETRY_WAITS = (0.5, 2.0, 5.0)
# At start, jobs a stopped process left running are checked on Discord (was the result already posted?): this
# many at once, each for at most this long (then it is refunded, as when Discord cannot tell).
POSTED_CHECKS_AT_ONCE = 16
POSTED_CHECK_TIMEOUT = 10.0
# Seconds before a queued job whose start the store refused goes back into the queue.
START_RETRY = 5.0
# Discord's documented upload limit for a server without boosts, used when an interaction does not say.
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
# How often queued jobs' positions are recomputed and pushed out, at most.
POSITION_REFRESH_SECONDS = 2.0
# Job ids are unique in one database; this keeps two bots sharing a temporary folder apart (one random draw).
_PROCESS_TOKEN = secrets.token_hex(4)
# A small result is downloaded into memory and posted from there, never touching the disk: up to this many bytes
# per job, and this many across the bot (beyond that, images are spooled to files and streamed).
IN_MEMORY_JOB_BYTES = 1024 * 1024
IN_MEMORY_TOTAL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class JobRequest:
    """Everything needed to accept a request now and answer it later, even after a restart."""

    guild_id: int
    channel_id: int
    user_id: int
    role_ids: tuple[int, ...]
    application_id: int
    interaction_id: int
    interaction_token: str
    token_expires_at: datetime
    attachment_size_limit: int
    options: ImagineOptions


@dataclass(frozen=True, slots=True)
class Accepted:
    """The request was paid for and is running (``position`` None) or queued at ``position``. One accepted as
    the bot stops, that the store could not give back, is left for the next start (see ``submit``)."""

    job: Job
    position: int | None


@dataclass(frozen=True, slots=True)
class OverQuota:
    """A limit or budget stopped the request; nothing was charged."""

    refused: Refused
    cost: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """What is ready to be posted for a finished job."""

    options: ImagineOptions
    groups: list[list[DeliverableImage]]
    generation_seconds: float
    reported_credits: float | int | None
    # Images not attached (the generator sent fewer than asked, or one could not be fetched, read or made to fit)
    # and the hundredths given back for them; ``linked`` of them are offered as links instead, ``lost`` came from
    # the generator but could be neither attached nor linked.
    missing: int = 0
    refunded: int = 0
    linked: int = 0
    lost: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """Where the result landed."""

    channel_id: int | None
    message_id: int | None
    # The messages after the first when the result had to be split.
    extra_message_ids: tuple[int, ...] = ()


class Stopping(Exception):
    """The bot is stopping: the request was not taken (anything reserved for it was given back)."""


class DeliveryFailed(Exception):
    """The result could be posted nowhere (token expired, channel closed to the bot, no DM)."""


class _Withdrawn(Exception):
    """A job waiting out a 429 was cancelled: the generator never took it, and cancel() wrote its refund."""


class JobEvents(Protocol):
    """The Discord side of a job's life; implemented by the imagine cog.

    ``on_started`` is awaited before the generation request goes out, so it must return at once: a status edit
    it makes runs in the background, and a later ``deliver`` or ``on_failed`` must come after that edit.
    """

    async def on_queued(self, job: Job, position: int) -> None: ...
    async def on_started(self, job: Job) -> None: ...
    async def on_rate_limited(self, job: Job, seconds: float, *, out_of_funds: bool = False) -> None: ...
    async def on_resent(self, job: Job) -> None: ...
    async def on_failed(self, job: Job, sentence: str) -> None: ...
    async def on_interrupted(self, job: Job) -> None: ...
    async def posted_before(self, job: Job) -> DeliveryReceipt | None: ...
    async def deliver(self, job: Job, delivery: Delivery) -> DeliveryReceipt: ...
    async def on_delivered(self, job: Job, delivery: Delivery, receipt: DeliveryReceipt) -> None: ...


def rate_limit_wait(retry_after: float | None, backoff: float) -> float:
    """Seconds to wait after a 429: its Retry-After within sane bounds, else the current back-off."""
    wait = backoff if retry_after is None else retry_after
    return min(max(wait, MIN_RATE_LIMIT_WAIT), MAX_RATE_LIMIT_WAIT)


def job_options(job: Job) -> ImagineOptions:
    """The ``/imagine`` options a job was created with."""
    return ImagineOptions.from_dict(job.options["request"])


def requested_count(job: Job) -> int | None:
    """How many images the job asked for, read leniently where nothing may fail: None if it cannot be read."""
    request = job.options.get("request")
    count = request.get("count") if isinstance(request, dict) else None
    return count if isinstance(count, int) and count >= 1 else None


class JobService:
    """Accepts requests (reserving their cost), runs them through the fair queue and settles every one."""

    def __init__(
        self,
        *,
        store: Store,
        generator: GeneratorClient,
        policy: Policy,
        weights: QualityWeights,
        max_concurrent: int,
        max_per_member: int,
        spool_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.generator = generator
        self.policy = policy
        self.weights = weights
        self.events: JobEvents | None = None
        self.spool_dir = spool_dir
        self.scheduler = FairScheduler(
            run=self._run,
            max_concurrent=max_concurrent,
            max_per_member=max_per_member,
            on_change=self._positions_changed,
        )
        self._active: dict[int, Job] = {}
        self._pushed_positions: dict[int, int] = {}
        self._refresh_handle: asyncio.TimerHandle | None = None
        self._last_refresh = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self._in_memory_free = IN_MEMORY_TOTAL_BYTES
        # Jobs whose cancellation is being written, and when that write is over: a second Cancel meanwhile waits
        # for it (if it failed, the job is back where it waited, and the second press cancels it).
        self._cancelling: dict[int, asyncio.Future[None]] = {}
        # Jobs held back before the generator outside the queue: a start the store refused, to be retried (its
        # timer), and a request the generator answered with 429, waiting to be sent again (set when cancelled).
        self._start_retries: dict[int, asyncio.TimerHandle] = {}
        self._rate_limited: dict[int, asyncio.Future[bool]] = {}
        # The tasks of jobs posting their results or telling their failure, by job id (see close()).
        self._delivering: dict[int, asyncio.Task[object]] = {}
        # Other tasks settling a job and telling its member (a Cancel click), which a stop also waits for.
        self._telling: set[asyncio.Task[object]] = set()

    def cost_of(self, options: ImagineOptions) -> int:
        """The request's cost in hundredths of a credit."""
        return request_cost(
            width=options.size.width,
            height=options.size.height,
            quality=options.quality,
            count=options.count,
            weights=self.weights,
        )

    async def submit(self, request: JobRequest) -> Accepted | OverQuota:
        """Reserve the request's cost atomically and queue the job, or say which limit stops it.

        A job with a free slot is written as running and its task created before this returns: it goes to the
        generator as soon as the caller yields, beside the caller's answer to the member.
        """
        cost = self.cost_of(request.options)
        checks = await self.policy.checks(request.guild_id, request.user_id, request.role_ids)
        # Its place in flight is taken first, so that the one write that reserves the cost also says "running".
        start_now = self.scheduler.claim(request.user_id)
        try:
            outcome = await self._reserve(request, cost, checks, start=start_now)
        except BaseException as error:
            if start_now:
                self.scheduler.release(request.user_id)
            if isinstance(error, Exception):
                await self._take_back_lost_reservation(request)
            raise
        if isinstance(outcome, Refused):
            if start_now:
                self.scheduler.release(request.user_id)
            return OverQuota(outcome, cost)
        job = outcome.job
        if self.scheduler.stopped:
            # close() began while the request was being written: nothing would start it before the next start,
            # and a claimed one would be taken for interrupted then. Give it back; the caller says why.
            if start_now:
                self.scheduler.release(request.user_id)
            try:
                await self.store.fail_job(job.id, state="cancelled", error="the bot was stopping as it was accepted")
            except Exception:
                # Still reserved: the next start settles it like every job a stop leaves behind (a queued one runs
                # then; one written as running is refunded as interrupted, and its member told). So it is answered
                # with its status, behind the jobs already waiting, never "nothing was charged".
                log.exception("job %s: written as the bot began to stop, and could not be given back", job.id)
                return Accepted(job, None if start_now else self.scheduler.queued)
            raise Stopping
        # DEBUG: in a burst a line per accepted job costs the event loop; the job's outcome is logged at INFO.
        log.debug("job %s accepted: guild %s, member %s, cost %s", job.id, job.guild_id, job.user_id, cost)
        self._active[job.id] = job
        if start_now:
            self.scheduler.start_claimed(job.id, job.user_id)
            return Accepted(job, None)
        self.scheduler.submit(job.id, job.user_id)
        position = self.scheduler.position(job.id)
        if position is not None:
            self._pushed_positions[job.id] = position
        return Accepted(job, position)

    async def _take_back_lost_reservation(self, request: JobRequest) -> None:
        """After a reservation that failed: if it was written after all (its connection dropped between COMMIT and
        the answer), end that job as cancelled and refund it, since the member is told nothing was charged. Left
        alone, a queued one would run at the next start and one written as running be refunded as interrupted
        only then, its credits held meanwhile. If the store cannot say, the next start settles it as before."""
        try:
            recent = await self.store.recent_jobs(guild_id=request.guild_id, user_id=request.user_id, limit=5)
            written = next((job for job in recent if job.interaction_id == request.interaction_id), None)
            if written is not None and await self.store.fail_job(
                written.id, state="cancelled", error="its reservation failed as far as the bot could tell"
            ):
                log.warning("job %s: its reservation was written after all; cancelled and refunded", written.id)
        except Exception:
            log.warning("could not check whether a failed reservation was written after all", exc_info=True)

    async def _reserve(
        self, request: JobRequest, cost: int, checks: Sequence[BudgetCheck], *, start: bool
    ) -> Reserved | Refused:
        return await self.store.reserve(
            NewJob(
                guild_id=request.guild_id,
                channel_id=request.channel_id,
                user_id=request.user_id,
                application_id=request.application_id,
                interaction_id=request.interaction_id,
                interaction_token=request.interaction_token,
                token_expires_at=request.token_expires_at,
                options={
                    "request": request.options.to_dict(),
                    "attachment_size_limit": request.attachment_size_limit,
                },
                cost=cost,
            ),
            checks,
            start=start,
        )

    async def abandon(self, job: Job, reason: str) -> bool:
        """Take back and refund an accepted job that could not even be acknowledged on Discord, if it has not
        started yet. False if it already went to the generator, or the store could not take it back (it runs on:
        it is paid for)."""
        if not self.scheduler.cancel(job.id):
            return False
        try:
            await self._write_cancellation(job.id, self._back_in_the_queue(job.id), error=reason)
        except Exception:
            # Still charged: it runs after all (its result then goes wherever it can), rather than wait unseen.
            log.exception("job %s: could not be taken back (%s); it runs on", job.id, reason)
            return False
        log.warning("job %s abandoned before it started: %s", job.id, reason)
        return True

    async def cancel(self, job_id: int, *, actor_id: int | None = None) -> bool:
        """Cancel a job the generator has not taken and refund it (``actor_id``: who pressed Cancel, kept with the
        refund). False if it is at the generator or finished.

        Cancellable: a queued job, one whose start is about to be retried, and one waiting out a 429 (the generator
        refused it, so nothing was spent; see ``waiting``).
        """
        while (writing := self._cancelling.get(job_id)) is not None:
            await asyncio.shield(writing)
        settle = self._withdraw(job_id)
        if settle is None:
            return False
        return await self._write_cancellation(job_id, settle, error="cancelled before it started", actor_id=actor_id)

    async def _write_cancellation(
        self, job_id: int, settle: Callable[[bool], None], *, error: str, actor_id: int | None = None
    ) -> bool:
        """Write a withdrawn job as cancelled and refunded; ``settle`` (see ``_withdraw``) learns whether it was."""
        written = self._cancelling[job_id] = asyncio.get_running_loop().create_future()
        try:
            cancelled = await self.store.fail_job(job_id, state="cancelled", error=error, actor_id=actor_id)
        except BaseException:
            settle(False)  # nothing was written: the job takes its place again, and the caller says it failed
            raise
        else:
            settle(True)
            self._forget(job_id)
        finally:
            del self._cancelling[job_id]
            written.set_result(None)  # after settle: a press waiting for this write finds the job where it is now
        return cancelled

    def _withdraw(self, job_id: int) -> Callable[[bool], None] | None:
        """Take a job out of the line it waits in before the generator, or None if it waits in none.

        The result settles the withdrawal once the cancellation is written (True) or could not be (False: the job
        goes back where it waited, so it is neither stranded nor run after a Cancel that was written).
        """
        if self.scheduler.cancel(job_id):
            return self._back_in_the_queue(job_id)
        retry = self._start_retries.pop(job_id, None)
        if retry is not None:
            retry.cancel()
            job = self._active.get(job_id)

            def retried_later(written: bool) -> None:
                if not written and job is not None:
                    self._schedule_start_retry(job_id, job.user_id)

            return retried_later
        waiting = self._rate_limited.pop(job_id, None)
        if waiting is not None and not waiting.done():
            # The waiting job stays asleep until the write's outcome says whether it ends or is sent again.
            return waiting.set_result
        return None

    def _back_in_the_queue(self, job_id: int) -> Callable[[bool], None]:
        """Settles a job taken out of the queue: put back first in its member's line if it was not cancelled."""
        job = self._active.get(job_id)

        def settle(written: bool) -> None:
            if not written and job is not None:
                self.scheduler.submit(job_id, job.user_id, first=True)

        return settle

    def waiting(self, job_id: int) -> bool:
        """Whether the job waits before the generator, so that Cancel still works: queued, its start about to be
        retried, or waiting out a 429."""
        return (
            self.scheduler.position(job_id) is not None or job_id in self._start_retries or job_id in self._rate_limited
        )

    async def was_cancelled(self, job_id: int) -> bool:
        """Whether the job was cancelled (a second press of Cancel, say)."""
        if job_id in self._cancelling:
            return True
        job = await self.store.get_job(job_id)
        return job is not None and job.state == "cancelled"

    @contextlib.contextmanager
    def telling(self) -> Iterator[None]:
        """While the current task settles a job and tells its member (a Cancel click: its write, then its answer),
        a stop waits for it as for a result being posted (see close()): cut off between the two, the job would be
        refunded while its status still showed "queued" and a Cancel button, for good."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self._telling.add(task)
        try:
            yield
        finally:
            self._telling.discard(task)

    async def until_posted(self, job_id: int) -> None:
        """Wait until a result being posted is all posted and recorded (or its failure is): a Delete pressed under
        its first part must know every part. Returns at once for any other job; cancelling the wait leaves the
        job's own task running."""
        task = self._delivering.get(job_id)
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait([task])

    @property
    def stopping(self) -> bool:
        """Whether the bot is stopping: no job starts any more (see close())."""
        return self.scheduler.stopped

    def position(self, job_id: int) -> int | None:
        """The queue position of a waiting job, or None."""
        return self.scheduler.position(job_id)

    async def recover(self) -> None:
        """At start: refund and report jobs a dead process left running; queue again the ones still waiting.

        A job whose whole result is already on Discord (the process stopped between posting and recording it) is
        recorded as delivered instead: the member has their images, so they are charged for them.
        """
        running = await self.store.jobs_in_states(["running"])
        checks = asyncio.Semaphore(POSTED_CHECKS_AT_ONCE)

        async def posted_before(job: Job) -> DeliveryReceipt | None:
            async with checks:
                return await self._posted_before(job)

        receipts = await asyncio.gather(*(posted_before(job) for job in running))
        for job, receipt in zip(running, receipts, strict=True):
            if receipt is not None and await self.store.mark_delivered(
                job.id, result_channel_id=receipt.channel_id, result_message_id=receipt.message_id
            ):
                log.warning("job %s: its result was posted before the restart; recorded as delivered", job.id)
                await self._notify(self._log_recovered(job, receipt), job)
        interrupted = await self.store.interrupt_running_jobs(
            error="the bot restarted while this image was being generated"
        )
        for job in interrupted:
            log.warning("job %s was interrupted by a restart; refunded %s", job.id, job.cost)
            await self._notify(self._events().on_interrupted(job), job)
        queued = await self.store.jobs_in_states(["queued"])
        for job in queued:
            self._active[job.id] = job
        served = _served_at(running)
        self.scheduler.restore(
            [(job.id, job.user_id) for job in sorted(queued, key=_turn_order(queued, served))], served=served.keys()
        )
        if self.scheduler.queued:
            self._positions_changed()

    async def close(self) -> None:
        """Stop the queue; jobs in flight stay 'running' in the store and are settled at the next start.

        Results already being posted are given up to ``DELIVERY_GRACE_SECONDS`` to finish and be recorded first:
        cut off, a result on Discord would be taken for an interrupted job at the next start and refunded. So are
        failures being recorded and told: cut off after the record, the member would never hear of it (the next
        start reports only jobs still running).
        """
        if self._refresh_handle is not None:
            self._refresh_handle.cancel()
        self.scheduler.stop_starting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELIVERY_GRACE_SECONDS
        while (finishing := [*self._delivering.values(), *self._telling]) and (left := deadline - loop.time()) > 0:
            log.info("stopping: waiting up to %.0f s for %d job(s) posting or telling", left, len(finishing))
            await asyncio.wait(finishing, timeout=left)
        await self.scheduler.close()
        for task in list(self._background):
            task.cancel()

    async def _log_recovered(self, job: Job, receipt: DeliveryReceipt) -> None:
        """A result found posted at start goes to the server's log channel like any delivered one."""
        delivery = Delivery(options=job_options(job), groups=[], generation_seconds=0.0, reported_credits=None)
        await self._events().on_delivered(job, delivery, receipt)

    async def _posted_before(self, job: Job) -> DeliveryReceipt | None:
        """Where the job's result already is on Discord, or None (also when that cannot be found out now)."""
        try:
            async with asyncio.timeout(POSTED_CHECK_TIMEOUT):
                return await self._events().posted_before(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("job %s: could not check whether its result was posted; it is refunded", job.id, exc_info=True)
            return None

    # -- running a job -------------------------------------------------------------------------------------------

    def _events(self) -> JobEvents:
        if self.events is None:
            raise RuntimeError("JobService.events is not set: the imagine cog is not loaded")
        return self.events

    async def _run(self, job_id: int) -> None:
        known = self._active.get(job_id)
        try:
            job = known or await self.store.get_job(job_id)
            # A job that waited in the queue is written as running now; one that found a free slot was already
            # written so when it was reserved.
            if job is None or (job.state != "running" and not await self._mark_running(job_id)):
                self._forget(job_id)
                return
        except Exception:
            # Nothing was sent or spent, and the row still says queued: try again shortly rather than leave it
            # waiting (and its credits held) until the next start.
            if known is None:
                log.exception("job %s: the store failed as it was starting; it runs after the next start", job_id)
                return
            log.exception("job %s: the store failed as it was starting; queued again in %.0f s", job_id, START_RETRY)
            self._schedule_start_retry(job_id, known.user_id)
            return
        events = self._events()
        # Created by the fitting only if an image needs re-encoding: no file-system call on the loop here.
        workdir = Path(self.spool_dir or tempfile.gettempdir()) / f"imagine-job-{job_id}-{_PROCESS_TOKEN}"
        result: GenerationResult | None = None
        downloaded: list[DownloadedImage] = []
        held_in_memory = 0
        left_files = True  # whether anything may be on disk to remove at the end
        try:
            options = job_options(job)
            await self._notify(events.on_started(job), job)  # returns at once (see JobEvents)
            result = await self._generate(job, options)
            # Counted once the sizes are known (a download buffers that much anyway): jobs waiting for a download
            # slot hold nothing. Jobs finishing their downloads together may overshoot by a few images at most.
            allowance = max(0, min(IN_MEMORY_JOB_BYTES, self._in_memory_free))
            downloaded = await self.generator.download(result, in_memory=allowance)
            held_in_memory = sum(len(image.data) for image in downloaded if image.data is not None)
            self._in_memory_free -= held_in_memory
            sources = [
                SourceImage(
                    index=image.index,
                    path=image.path,
                    size_bytes=image.size_bytes,
                    fallback_url=image.source_url,
                    link_expires_at=image.link_expires_at,
                    data=image.data,
                )
                for image in downloaded
            ]
            fitted = await fit_for_upload(
                sources,
                file_limit=upload_limit(job),
                workdir=workdir,
                preferred_format=options.output_format,
            )
            # Small images downloaded into memory and posted as they are never touch the disk.
            left_files = any(image.path is not None for image in downloaded) or not all(
                image.data is not None for image in fitted
            )
            # Charged: the images attached. One offered only as a link (it could not be fetched, read or made to
            # fit) is given back with those the generator never sent: the link may well not open.
            arrived = sum(1 for image in fitted if image.is_upload)
            delivery = Delivery(
                options=options,
                groups=plan_messages(fitted),
                generation_seconds=result.elapsed,
                reported_credits=result.reported_credits,
                missing=max(0, options.count - arrived),
                refunded=self._refund_for_missing(job, options, arrived),
                linked=sum(1 for image in fitted if not image.is_upload and image.link is not None),
                lost=sum(1 for image in fitted if not image.is_upload and image.link is None),
            )
            # A stopping bot lets this job finish posting and recording (close()), within a grace period.
            if (task := asyncio.current_task()) is not None:
                self._delivering[job_id] = task
            receipt = await events.deliver(job, delivery)
            await self._record_delivery(job, result, receipt, refund=delivery.refunded)
            await self._notify(events.on_delivered(job, delivery, receipt), job)
        except GeneratorError as error:
            log.warning("job %s failed at the generator: %s", job_id, error.detail)
            await self._fail(job, error.detail, error.user_message, result)
        except DeliveryFailed as error:
            log.warning("job %s: images were made but could not be posted anywhere: %s", job_id, error)
            await self._fail(job, f"delivery failed: {error}", None, result)
        except _Withdrawn:
            log.info("job %s was cancelled while it waited out the generator's rate limit", job_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("job %s failed unexpectedly", job_id)
            await self._fail(
                job,
                f"internal error: {stored_error_text(error)}",
                f"Something broke on the bot's side (job {job_id}). Please try again.",
                result,
            )
        finally:
            self._forget(job_id)
            self._in_memory_free += held_in_memory
            if left_files:
                await asyncio.to_thread(_remove_files, workdir, [image.path for image in downloaded])

    def _refund_for_missing(self, job: Job, options: ImagineOptions, arrived: int) -> int:
        """What to give back when fewer than the asked images arrived: the cost less that of the ones that did,
        at the price the job was charged.

        The quality weights may have changed since (a restart with new ones while the job was queued): the job's
        own cost is then shared out pro rata, rounded in the member's favour, rather than priced anew.
        """
        if arrived >= options.count:
            return 0
        if not arrived:
            return job.cost
        if self.cost_of(options) == job.cost:
            kept = self.cost_of(replace(options, count=arrived))
        else:
            kept = job.cost * arrived // options.count
        return max(0, job.cost - kept)

    async def _record_delivery(
        self, job: Job, result: GenerationResult, receipt: DeliveryReceipt, *, refund: int = 0
    ) -> None:
        """Record a job whose images are on Discord as delivered, however long the store takes to take it.

        Once the images are posted nothing may refund them or overwrite them with a failure: a store error here is
        retried (after 0.5, 2, 5 s, then every 30 s) for as long as the bot runs, and never settled as a failed job.
        Each write goes on even if the bot is stopping. If the bot stops first, the row still says running: the next
        start finds the result on Discord and records it (``recover``), or, if it cannot tell (the token expired,
        the result was split or posted in the channel), refunds the job like any interrupted one.
        """
        await self._write_until_done(
            job.id,
            "its delivery",
            lambda: self.store.mark_delivered(
                job.id,
                result_channel_id=receipt.channel_id,
                result_message_id=receipt.message_id,
                reported_credits=result.reported_credits,
                generator_record_id=result.record_id,
                result_extra_message_ids=receipt.extra_message_ids,
                refund=refund,
            ),
        )
        log.info(
            "job %s delivered: generation %s, %d image(s) in %.1f s at the generator, reported credit %s",
            job.id,
            result.record_id,
            result.image_count,
            result.elapsed,
            result.reported_credits,
        )

    async def _mark_running(self, job_id: int) -> bool:
        """Write a queued job as running; whether it is now this start's to run. Not if it was cancelled
        meanwhile; but yes if an earlier try of this start was written after all and only its answer was lost (a
        connection dropped after COMMIT): nothing else sets a queued job running."""
        if await self.store.mark_running(job_id):
            return True
        current = await self.store.get_job(job_id)
        return current is not None and current.state == "running"

    async def _write_until_done(self, job_id: int, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """Run a store write that settles a job (``what`` it records, for the log) until it succeeds: after 0.5, 2
        and 5 s, then every 30 s, for as long as the bot runs. Each attempt goes on even if the bot is stopping.

        For writes that must not be given up: the outcome they record has already happened (images on Discord, a
        generation that failed), and until one is written the job stays running, its credits held and its member
        shown "generating". Each such write is safe to repeat: one that committed but whose answer was lost
        changes nothing the second time.
        """
        waits = itertools.chain(RECORD_RETRY_WAITS, itertools.repeat(RECORD_RETRY_WAITS[-1] * 6))
        for attempt in itertools.count(1):
            try:
                return await asyncio.shield(write())
            except Exception:
                wait = next(waits)
                if attempt == len(RECORD_RETRY_WAITS) + 1:
                    log.exception("job %s: %s cannot be recorded; trying every %.0f s", job_id, what, wait)
                else:
                    log.warning("job %s: recording %s failed (attempt %s), trying again", job_id, what, attempt)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _generate(self, job: Job, options: ImagineOptions) -> GenerationResult:
        """One POST; after a 429 only (the request was not taken) wait and send it again, as often as it takes.

        The contract: a 429 delays a job, it never fails it.
        """
        request = options.to_generation_request()
        backoff = BACKOFF_START
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.generator.generate(request)
            except RateLimited as error:
                wait = rate_limit_wait(error.retry_after, backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
                log.log(
                    logging.ERROR if error.out_of_funds else logging.INFO,
                    "job %s: generator rate limit, trying again in %.1f s (attempt %s): %s",
                    job.id,
                    wait,
                    attempt,
                    error.detail,
                )
                self.scheduler.pause(wait)
                events = self._events()
                await self._notify(events.on_rate_limited(job, wait, out_of_funds=error.out_of_funds), job)
                if await self._wait_out_rate_limit(job.id, wait):
                    raise _Withdrawn from None
                await self._notify(self._events().on_resent(job), job)

    async def _wait_out_rate_limit(self, job_id: int, seconds: float) -> bool:
        """Sleep through a 429's wait, cancellable meanwhile (see ``cancel``); True if it was cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        cancel_failed = False
        while True:
            cancelled: asyncio.Future[bool] = loop.create_future()
            self._rate_limited[job_id] = cancelled
            try:
                await asyncio.wait([cancelled], timeout=max(0.0, deadline - loop.time()))
            finally:
                # Gone from the dict: a Cancel took it (perhaps between the timeout and this line).
                taken = self._rate_limited.pop(job_id, None) is not cancelled
            if not taken:
                break
            # The outcome of the Cancel's write decides. Shielded: a stopping bot cancels this task, never the
            # future that Cancel will settle.
            if await asyncio.shield(cancelled):
                return True
            cancel_failed = True  # nothing known to be written: the rest of the wait, then sent again
            if loop.time() >= deadline:
                break
        # A write that failed may still have been committed (a connection lost after COMMIT): the row decides.
        return cancel_failed and await self._cancelled_meanwhile(job_id)

    async def _cancelled_meanwhile(self, job_id: int) -> bool:
        """Whether the job's row is no longer running; a store that cannot tell counts as not (it is sent)."""
        try:
            job = await self.store.get_job(job_id)
        except Exception:
            log.warning("job %s: cannot read whether a Cancel was written; sending it again", job_id, exc_info=True)
            return False
        return job is None or job.state != "running"

    def _schedule_start_retry(self, job_id: int, user_id: int) -> None:
        self._start_retries[job_id] = asyncio.get_running_loop().call_later(
            START_RETRY, self._retry_start, job_id, user_id
        )

    def _retry_start(self, job_id: int, user_id: int) -> None:
        self._start_retries.pop(job_id, None)
        self.scheduler.submit(job_id, user_id, first=True)  # ignored once the bot is stopping

    async def _fail(self, job: Job, detail: str, sentence: str | None, result: GenerationResult | None) -> None:
        # A stopping bot lets the record and the notice finish, as it does a result being posted (close()). The
        # record is retried until the store takes it (the member is told once it is refunded): a store down at
        # that moment must not leave the job "generating" with its credits held until the next start.
        if (task := asyncio.current_task()) is not None:
            self._delivering[job.id] = task
        refunded = await self._write_until_done(
            job.id,
            "its failure",
            lambda: self.store.fail_job(
                job.id,
                state="failed",
                error=detail,
                reported_credits=result.reported_credits if result else None,
                generator_record_id=result.record_id if result else None,
            ),
        )
        if refunded:
            log.info("job %s refunded %s", job.id, job.cost)
        if sentence is not None:
            await self._notify(self._events().on_failed(job, sentence), job)

    async def _notify(self, call: object, job: Job) -> None:
        """Tell the member something; a Discord hiccup here must never break the job's bookkeeping."""
        try:
            await call  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: could not update the member", job.id)

    def _forget(self, job_id: int) -> None:
        self._active.pop(job_id, None)
        self._delivering.pop(job_id, None)
        self._pushed_positions.pop(job_id, None)

    # -- queue positions -----------------------------------------------------------------------------------------

    def _positions_changed(self) -> None:
        if self._refresh_handle is not None:
            return
        delay = max(0.0, self._last_refresh + POSITION_REFRESH_SECONDS - time.monotonic())
        self._refresh_handle = asyncio.get_running_loop().call_later(delay, self._push_positions)

    def _push_positions(self) -> None:
        self._refresh_handle = None
        self._last_refresh = time.monotonic()
        events = self.events
        if events is None:
            return
        for job_id, position in self.scheduler.positions().items():
            if self._pushed_positions.get(job_id) == position:
                continue
            job = self._active.get(job_id)
            if job is None:
                continue
            self._pushed_positions[job_id] = position
            task = asyncio.get_running_loop().create_task(self._notify(events.on_queued(job, position), job))
            self._background.add(task)
            task.add_done_callback(self._background.discard)


def upload_limit(job: Job) -> int:
    """The largest file the job's images may be: the server's upload limit, but never more than one request holds."""
    server_limit = int(job.options.get("attachment_size_limit") or DEFAULT_ATTACHMENT_LIMIT)
    return file_limit(server_limit)


def stored_error_text(error: BaseException) -> str:
    """An unexpected error as it may be stored in a job's row: an HTTP client error's repr or text carries its
    request (the URL, with an interaction token in it, and the headers, with the bot token), so only its type and
    status are kept."""
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{type(error).__name__} (HTTP {error.status})"
    if isinstance(error, aiohttp.ClientError):
        return type(error).__name__
    return repr(error)


def _served_at(running: list[Job]) -> dict[int, datetime]:
    """The members with a job in flight when the bot stopped, who had been served: when, their latest job's start."""
    served: dict[int, datetime] = {}
    for job in running:
        started = job.started_at or job.created_at  # a running job's row always has its start
        served[job.user_id] = max(started, served.get(job.user_id, started))
    return served


def _turn_order(queued: list[Job], served: dict[int, datetime]) -> Callable[[Job], tuple[bool, datetime, int, int]]:
    """Sort key putting the queued jobs a restart found back in the order their members' turns would have come.

    Round robin serves first the members not served since they started waiting, in the order they started (their
    oldest queued job), then those ``served``, least recently first; the others are taken as not served yet. Each
    member's jobs keep their order.
    """
    waiting_since: dict[int, int] = {}
    for job in queued:
        waiting_since.setdefault(job.user_id, job.id)
    never = datetime.min.replace(tzinfo=UTC)

    def key(job: Job) -> tuple[bool, datetime, int, int]:
        member = job.user_id
        return member in served, served.get(member, never), waiting_since[member], job.id

    return key


def _remove_files(workdir: Path, downloads: list[Path | None]) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    for path in downloads:
        if path is not None:
            path.unlink(missing_ok=True)


__all__: Sequence[str] = (
    "Accepted",
    "Delivery",
    "DeliveryFailed",
    "DeliveryReceipt",
    "JobEvents",
    "JobRequest",
    "JobService",
    "OverQuota",
    "Stopping",
    "job_options",
    "requested_count",
)
