"""JobService's settling of a job's money: a real SQLite store, a stub generator and recorded Discord events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imaginebot import jobs as jobs_module
from imaginebot.credits import QualityWeights
from imaginebot.delivery import DeliverableImage
from imaginebot.generator import ContentRejected, DownloadedImage, GenerationResult, RateLimited
from imaginebot.jobs import Accepted, Delivery, DeliveryReceipt, JobRequest, JobService
from imaginebot.limits import Limit
from imaginebot.options import resolve_options
from imaginebot.policy import Policy
from imaginebot.store import Job, SqliteStore
from tests.e2e.harness import wait_until

GUILD, MEMBER, CHANNEL, APPLICATION = 11, 22, 33, 44


class StubGenerator:
    """Answers each POST with ``count`` images, after the failures queued in ``errors``."""

    def __init__(self) -> None:
        self.posts = 0
        self.post_times: list[float] = []
        self.errors: list[Exception] = []
        self.short_by = 0  # images fewer than asked for in each answer

    async def generate(self, request: Any) -> GenerationResult:
        self.posts += 1
        self.post_times.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return GenerationResult(
            record_id=f"record-{self.posts}",
            asset_paths=[f"image-{index}.png" for index in range(request.count - self.short_by)],
            temporary_url=None,
            reported_credits=None,
            elapsed=1.0,
        )

    async def download(self, result: GenerationResult, *, in_memory: int = 0) -> list[DownloadedImage]:
        return [
            DownloadedImage(
                index=index,
                path=None,
                size_bytes=4,
                content_type="image/png",
                source_url=f"https://asset.example/{path}",
                link_expires_at=None,
                error=None,
                data=b"\x89PNG",
            )
            for index, path in enumerate(result.asset_paths)
        ]


class RecordedEvents:
    """The Discord side, recorded; ``deliver`` does what the test sets in ``deliver_with``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.deliver_with: Callable[[Job, Delivery], Any] | None = None
        # What posted_before() says for a job id at recovery (None: not posted; an exception: cannot tell).
        self.posted: dict[int, DeliveryReceipt | Exception | None] = {}
        self.out_of_funds = False  # what the last on_rate_limited was told

    async def on_queued(self, job: Job, position: int) -> None:
        self.seen.append(("queued", position))

    async def on_started(self, job: Job) -> None:
        self.seen.append(("started", job.id))

    async def on_rate_limited(self, job: Job, seconds: float, *, out_of_funds: bool = False) -> None:
        self.seen.append(("rate-limited", seconds))
        self.out_of_funds = out_of_funds

    async def on_resent(self, job: Job) -> None:
        self.seen.append(("resent", job.id))

    async def on_failed(self, job: Job, sentence: str) -> None:
        self.seen.append(("failed", sentence))

    async def on_interrupted(self, job: Job) -> None:
        self.seen.append(("interrupted", job.id))

    async def posted_before(self, job: Job) -> DeliveryReceipt | None:
        answer = self.posted.get(job.id)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def deliver(self, job: Job, delivery: Delivery) -> DeliveryReceipt:
        self.seen.append(("deliver", delivery))
        if self.deliver_with is not None:
            return await self.deliver_with(job, delivery)
        return DeliveryReceipt(CHANNEL, 1000 + job.id)

    async def on_delivered(self, job: Job, delivery: Delivery, receipt: DeliveryReceipt) -> None:
        self.seen.append(("delivered", receipt.message_id))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.seen]

    async def wait_for(self, kind: str, timeout: float = 5) -> None:
        await wait_until(lambda: kind in self.kinds(), timeout, f"the event {kind!r}")


async def fit_as_they_are(sources: Any, **_: Any) -> list[DeliverableImage]:
    return [
        DeliverableImage(
            index=source.index,
            path=None,
            filename=f"imagine-{source.index + 1}.png",
            size_bytes=source.size_bytes,
            link=None,
            link_expires_at=None,
            note=None,
            width=1024,
            height=1024,
            data=source.data,
        )
        for source in sources
    ]


class Harness:
    def __init__(self, store: SqliteStore, service: JobService, generator: StubGenerator, events: RecordedEvents):
        self.store, self.service, self.generator, self.events = store, service, generator, events
        self._interactions = 0

    def request(self, *, count: int = 1) -> JobRequest:
        """A new interaction's request from the member."""
        self._interactions += 1
        return JobRequest(
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=MEMBER,
            role_ids=(),
            application_id=APPLICATION,
            interaction_id=5000 + self._interactions,
            interaction_token=f"token-{self._interactions}",
            token_expires_at=datetime.now(UTC) + timedelta(minutes=15),
            attachment_size_limit=10 * 1024 * 1024,
            options=resolve_options(prompt="a lighthouse at dusk", count=count),
        )

    async def submit(self, *, count: int = 1) -> Job:
        outcome = await self.service.submit(self.request(count=count))
        assert isinstance(outcome, Accepted)
        return outcome.job

    def hold_deliveries(self) -> asyncio.Event:
        """Deliveries wait until the returned event is set: the jobs keep their places in flight meanwhile."""
        gate = asyncio.Event()

        async def held(job: Job, delivery: Delivery) -> DeliveryReceipt:
            await gate.wait()
            return DeliveryReceipt(CHANNEL, 1000 + job.id)

        self.events.deliver_with = held
        return gate

    async def fill_members_places(self) -> asyncio.Event:
        """The member's two places in flight taken by jobs held before delivery (set the event to let them go):
        the member's next job waits in the queue."""
        gate = self.hold_deliveries()
        for _ in range(2):
            await self.submit()
        return gate

    async def settled(self, job: Job, timeout: float = 5) -> Job:
        async with asyncio.timeout(timeout):
            while True:
                current = await self.store.get_job(job.id)
                if current is not None and current.state not in ("queued", "running"):
                    return current
                await asyncio.sleep(0.01)

    async def used(self) -> int:
        return await self.store.usage(guild_id=GUILD, user_id=MEMBER, period="day")


@pytest.fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setattr(jobs_module, "fit_for_upload", fit_as_they_are)
    store = SqliteStore(tmp_path / "jobs.db")
    await store.open()
    generator = StubGenerator()
    service = JobService(
        store=store,
        generator=generator,  # type: ignore[arg-type]
        policy=Policy(store, bot_default=Limit(100_000, "day"), global_budget=None),
        weights=QualityWeights(),
        max_concurrent=4,
        max_per_member=2,
        spool_dir=tmp_path,
    )
    events = RecordedEvents()
    service.events = events
    yield Harness(store, service, generator, events)
    await service.close()
    await store.close()


async def test_a_job_is_delayed_by_any_number_of_rate_limits_never_failed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "MIN_RATE_LIMIT_WAIT", 0.001)
    harness.generator.errors = [RateLimited(retry_after=0) for _ in range(30)]
    job = await harness.submit()
    settled = await harness.settled(job)
    assert settled.state == "delivered"
    assert harness.generator.posts == 31
    assert harness.events.kinds().count("rate-limited") == 30
    assert await harness.used() == job.cost


async def test_a_job_waiting_out_a_429_can_be_cancelled_and_is_never_sent_again(harness: Harness) -> None:
    harness.generator.errors = [RateLimited(retry_after=30)]
    job = await harness.submit()
    await harness.events.wait_for("rate-limited")
    assert harness.service.waiting(job.id)
    assert await harness.service.cancel(job.id, actor_id=MEMBER)
    settled = await harness.settled(job)
    assert settled.state == "cancelled"
    assert await harness.used() == 0
    await asyncio.sleep(0.05)
    assert harness.generator.posts == 1
    assert "resent" not in harness.events.kinds() and "failed" not in harness.events.kinds()
    assert not harness.service.waiting(job.id)
    assert not await harness.service.cancel(job.id)  # a second press: nothing left to cancel
    assert await harness.service.was_cancelled(job.id)


async def test_a_429_saying_the_account_is_out_of_funds_delays_the_job_and_says_why(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "MIN_RATE_LIMIT_WAIT", 0.01)
    harness.generator.errors = [RateLimited(retry_after=0, out_of_funds=True)]
    job = await harness.submit()
    await harness.events.wait_for("resent")
    assert harness.events.out_of_funds  # the member's status says why the job waits
    assert (await harness.settled(job)).state == "delivered"  # not failed: once topped up, it goes


async def test_a_job_sent_again_after_its_429_can_no_longer_be_cancelled(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "MIN_RATE_LIMIT_WAIT", 0.01)
    harness.generator.errors = [RateLimited(retry_after=0)]
    job = await harness.submit()
    await harness.events.wait_for("resent")
    assert not harness.service.waiting(job.id)
    assert not await harness.service.cancel(job.id)
    assert (await harness.settled(job)).state == "delivered"
    assert await harness.used() == job.cost


@pytest.mark.parametrize(
    ("retry_after", "backoff", "expected"),
    [
        (None, 5.0, 5.0),  # no Retry-After: the back-off
        (0.0, 5.0, jobs_module.MIN_RATE_LIMIT_WAIT),  # "0" or a date already past: not a burst of requests
        (30.0, 5.0, 30.0),
        (99_999_999_999.0, 5.0, jobs_module.MAX_RATE_LIMIT_WAIT),  # not a bot stopped for good
    ],
)
def test_the_wait_after_a_429_is_its_retry_after_within_bounds(
    retry_after: float | None, backoff: float, expected: float
) -> None:
    assert jobs_module.rate_limit_wait(retry_after, backoff) == expected


async def test_a_far_off_retry_after_pauses_new_starts_no_longer_than_the_longest_wait(harness: Harness) -> None:
    harness.generator.errors = [RateLimited(retry_after=10**12)]
    job = await harness.submit()
    await harness.events.wait_for("rate-limited")
    assert ("rate-limited", jobs_module.MAX_RATE_LIMIT_WAIT) in harness.events.seen
    assert harness.service.scheduler.paused_for() <= jobs_module.MAX_RATE_LIMIT_WAIT
    assert (await harness.store.get_job(job.id)).state == "running"  # type: ignore[union-attr]


def store_down_for(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, method: str, failures: int, error: Exception
) -> list[Any]:
    """The store's ``method`` raises (a copy of) ``error`` for its next ``failures`` calls, then works again.
    Returns the list every call's first argument (the job id) is added to, in order."""
    real = getattr(harness.store, method)
    calls: list[Any] = []

    async def down_for_a_while(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0] if args else None)
        if len(calls) <= failures:
            raise type(error)(*error.args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(harness.store, method, down_for_a_while)
    return calls


def answers_lost_after_commit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, method: str, times: int = 1
) -> list[Any]:
    """The store's ``method`` writes, but for its next ``times`` calls the answer is lost (a connection dropped
    after COMMIT): ConnectionResetError. Returns the list what those writes returned is added to."""
    real = getattr(harness.store, method)
    lost: list[Any] = []

    async def commits_then_fails(*args: Any, **kwargs: Any) -> Any:
        outcome = await real(*args, **kwargs)
        if len(lost) < times:
            lost.append(outcome)
            raise ConnectionResetError("the answer was lost after COMMIT")
        return outcome

    monkeypatch.setattr(harness.store, method, commits_then_fails)
    return lost


async def test_a_store_error_after_the_images_are_posted_is_retried_and_never_refunds(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "RECORD_RETRY_WAITS", (0.01,))
    store_down_for(harness, monkeypatch, "mark_delivered", 1, RuntimeError("database is locked"))
    job = await harness.submit()
    assert (await harness.settled(job)).state == "delivered"
    assert "failed" not in harness.events.kinds()
    assert await harness.used() == job.cost


async def test_a_delivery_is_recorded_whenever_the_store_comes_back_never_failed_meanwhile(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "RECORD_RETRY_WAITS", (0.01, 0.01))  # then every 0.06 s
    calls = store_down_for(harness, monkeypatch, "mark_delivered", 6, RuntimeError("disk I/O error"))
    job = await harness.submit()
    await wait_until(lambda: len(calls) == 4, 5, "tries beyond the first three")
    assert "failed" not in harness.events.kinds() and "delivered" not in harness.events.kinds()
    assert (await harness.store.get_job(job.id)).state == "running"  # type: ignore[union-attr]
    assert (await harness.settled(job)).state == "delivered"
    assert len(calls) == 7 and "failed" not in harness.events.kinds()
    assert await harness.used() == job.cost


async def test_a_stopping_bot_lets_a_result_being_posted_finish_and_be_recorded(harness: Harness) -> None:
    posting = asyncio.Event()
    finish = asyncio.Event()

    async def slow_upload(job: Job, delivery: Delivery) -> DeliveryReceipt:
        posting.set()
        await finish.wait()
        return DeliveryReceipt(CHANNEL, 1000 + job.id)

    harness.events.deliver_with = slow_upload
    job = await harness.submit()
    await asyncio.wait_for(posting.wait(), 5)
    assert not harness.service.stopping
    closing = asyncio.create_task(harness.service.close())
    await asyncio.sleep(0.1)
    assert not closing.done()  # waiting for the upload
    assert harness.service.stopping  # /imagine refuses new requests meanwhile (nothing would start them)
    finish.set()
    await asyncio.wait_for(closing, 5)
    assert (await harness.store.get_job(job.id)).state == "delivered"  # type: ignore[union-attr]


async def test_a_stopping_bot_waits_for_a_stuck_upload_only_so_long(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "DELIVERY_GRACE_SECONDS", 0.2)
    posting = asyncio.Event()

    async def stuck_upload(job: Job, delivery: Delivery) -> DeliveryReceipt:
        posting.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    harness.events.deliver_with = stuck_upload
    job = await harness.submit()
    await asyncio.wait_for(posting.wait(), 5)
    await asyncio.wait_for(harness.service.close(), 5)
    # Left for the next start, which refunds it and says so.
    assert (await harness.store.get_job(job.id)).state == "running"  # type: ignore[union-attr]


async def test_a_failure_being_told_as_the_bot_stops_is_told_to_the_end(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    telling = asyncio.Event()

    async def slow_notice(job: Job, sentence: str) -> None:
        telling.set()
        await asyncio.sleep(0.3)  # the status edit on its way to Discord
        harness.events.seen.append(("failed", sentence))

    monkeypatch.setattr(harness.events, "on_failed", slow_notice)
    harness.generator.errors = [ContentRejected("HTTP 400 moderation_blocked")]
    job = await harness.submit()
    await asyncio.wait_for(telling.wait(), 5)
    await asyncio.wait_for(harness.service.close(), 5)  # the bot is stopped meanwhile
    # Recorded as failed and refunded: the next start would not tell the member, so this stop had to let it finish.
    assert (await harness.store.get_job(job.id)).state == "failed"  # type: ignore[union-attr]
    assert "failed" in harness.events.kinds()
    assert await harness.used() == 0


async def test_a_generator_failure_while_the_store_is_down_is_recorded_when_it_returns_and_told(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "RECORD_RETRY_WAITS", (0.01, 0.01))  # then every 0.06 s
    calls = store_down_for(
        harness, monkeypatch, "fail_job", 4, ConnectionRefusedError("the database server is restarting")
    )
    harness.generator.errors = [ContentRejected("HTTP 400 moderation_blocked")]
    job = await harness.submit()
    await wait_until(lambda: len(calls) == 3, 5, "tries while the store is down")
    assert "failed" not in harness.events.kinds()  # not told "refunded" before it is
    assert (await harness.store.get_job(job.id)).state == "running"  # type: ignore[union-attr]
    assert (await harness.settled(job)).state == "failed"
    await harness.events.wait_for("failed")
    assert await harness.used() == 0


async def test_a_failure_written_whose_answer_was_lost_is_told_and_refunded_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "RECORD_RETRY_WAITS", (0.01,))
    lost = answers_lost_after_commit(harness, monkeypatch, "fail_job")
    harness.generator.errors = [ContentRejected("HTTP 400 moderation_blocked")]
    job = await harness.submit()
    await harness.events.wait_for("failed")
    assert lost == [True]
    assert (await harness.store.get_job(job.id)).state == "failed"  # type: ignore[union-attr]
    assert await harness.used() == 0  # refunded by the first write, not again by the second
    assert harness.events.kinds().count("failed") == 1


async def test_images_the_generator_did_not_send_are_refunded_at_their_share(harness: Harness) -> None:
    harness.generator.short_by = 3
    job = await harness.submit(count=4)
    assert job.cost == 400
    assert (await harness.settled(job)).state == "delivered"
    [delivery] = [value for kind, value in harness.events.seen if kind == "deliver"]
    assert (delivery.missing, delivery.refunded) == (3, 300)
    assert sum(len(group) for group in delivery.groups) == 1
    assert await harness.used() == 100


@pytest.mark.parametrize("new_medium", [Fraction(2), Fraction(1, 2)])
async def test_missing_images_are_refunded_at_the_price_charged_even_after_the_weights_changed(
    harness: Harness, new_medium: Fraction
) -> None:
    harness.generator.short_by = 2
    generate = harness.generator.generate

    async def reweighted_meanwhile(request: Any) -> GenerationResult:
        # As after a restart with new weights while the job waited: the service now prices medium differently.
        harness.service.weights = QualityWeights(medium=new_medium)
        return await generate(request)

    harness.generator.generate = reweighted_meanwhile  # type: ignore[method-assign]
    job = await harness.submit(count=4)
    assert job.cost == 400  # charged at medium = 1
    assert (await harness.settled(job)).state == "delivered"
    [delivery] = [value for kind, value in harness.events.seen if kind == "deliver"]
    assert (delivery.missing, delivery.refunded) == (2, 200)
    assert await harness.used() == 200


async def test_a_full_result_refunds_nothing(harness: Harness) -> None:
    job = await harness.submit(count=2)
    assert (await harness.settled(job)).state == "delivered"
    [delivery] = [value for kind, value in harness.events.seen if kind == "deliver"]
    assert (delivery.missing, delivery.refunded) == (0, 0)
    assert await harness.used() == job.cost


async def test_a_queued_job_whose_start_the_store_refuses_is_queued_again_not_stranded(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "START_RETRY", 0.05)
    gate = harness.hold_deliveries()
    first, second = await harness.submit(), await harness.submit()  # the member's two places in flight
    third = await harness.submit()  # queued
    assert (await harness.store.get_job(third.id)).state == "queued"  # type: ignore[union-attr]
    calls = store_down_for(harness, monkeypatch, "mark_running", 1, ConnectionResetError("connection reset"))
    gate.set()
    for job in (first, second, third):
        assert (await harness.settled(job)).state == "delivered"
    assert len(calls) > 1  # the refused start, then the one that went through


async def test_a_reservation_written_whose_answer_was_lost_is_taken_back_as_the_member_is_told(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member is told nothing was charged: the job, written as running, is cancelled and refunded at once,
    never sent, rather than holding the credits until the next start refunds it as interrupted."""
    lost = answers_lost_after_commit(harness, monkeypatch, "reserve")
    with pytest.raises(ConnectionResetError):
        await harness.service.submit(harness.request())
    (reserved,) = lost
    job_id = reserved.job.id
    job = await harness.store.get_job(job_id)
    assert job is not None and job.state == "cancelled"
    assert await harness.used() == 0
    # Its place in flight was given back: the member's next two jobs both start at once.
    first, second = await harness.submit(), await harness.submit()
    for job in (first, second):
        assert (await harness.settled(job)).state == "delivered"
    assert harness.generator.posts == 2


async def test_a_queued_reservation_whose_answer_was_lost_never_runs_later(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = await harness.fill_members_places()
    lost = answers_lost_after_commit(harness, monkeypatch, "reserve")
    with pytest.raises(ConnectionResetError):
        await harness.service.submit(harness.request())
    (reserved,) = lost
    job_id = reserved.job.id
    assert (await harness.store.get_job(job_id)).state == "cancelled"  # type: ignore[union-attr]
    gate.set()
    await wait_until(lambda: harness.generator.posts == 2, 5, "the two jobs in flight at the generator")
    await asyncio.sleep(0.1)
    assert harness.generator.posts == 2
    assert await harness.used() == 2 * harness.service.cost_of(harness.request().options)


async def test_a_failed_reservation_that_was_not_written_takes_nothing_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = await harness.submit()
    assert (await harness.settled(earlier)).state == "delivered"

    async def fails(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError("refused before anything was written")

    monkeypatch.setattr(harness.store, "reserve", fails)
    with pytest.raises(ConnectionResetError):
        await harness.service.submit(harness.request())
    assert (await harness.store.get_job(earlier.id)).state == "delivered"  # type: ignore[union-attr]
    assert await harness.used() == harness.service.cost_of(harness.request().options)


async def test_a_start_written_whose_answer_was_lost_still_runs_the_job(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "START_RETRY", 0.05)
    gate = harness.hold_deliveries()
    first, second = await harness.submit(), await harness.submit()
    third = await harness.submit()  # queued
    lost = answers_lost_after_commit(harness, monkeypatch, "mark_running")
    gate.set()
    # The retry finds the row already running (its own earlier write): the job goes to the generator, not left
    # "running" with its credits held and its member shown a queue position until the next start.
    for job in (first, second, third):
        assert (await harness.settled(job)).state == "delivered"
    assert lost == [True] and harness.generator.posts == 3


async def test_a_job_whose_start_is_about_to_be_retried_can_be_cancelled(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "START_RETRY", 0.2)
    gate = harness.hold_deliveries()
    first, second = await harness.submit(), await harness.submit()
    third = await harness.submit()  # queued
    real_mark_running = harness.store.mark_running
    monkeypatch.setattr(harness.store, "mark_running", failing_write)
    gate.set()
    for job in (first, second):
        assert (await harness.settled(job)).state == "delivered"
    await wait_until(
        lambda: harness.service.waiting(third.id) and harness.service.position(third.id) is None,
        2,
        "the start to wait for its retry",
    )
    monkeypatch.setattr(harness.store, "mark_running", real_mark_running)
    assert await harness.service.cancel(third.id)
    assert (await harness.settled(third)).state == "cancelled"
    await asyncio.sleep(0.4)  # past the retry: it does not start
    assert harness.generator.posts == 2
    assert (await harness.store.get_job(third.id)).state == "cancelled"  # type: ignore[union-attr]


@pytest.mark.parametrize("other", [None, ConnectionResetError("Discord unreachable")])
async def test_recovery_charges_a_result_already_posted_and_refunds_the_rest(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: Exception | None
) -> None:
    monkeypatch.setattr(jobs_module, "DELIVERY_GRACE_SECONDS", 0.1)  # the stuck deliveries, at the test's end
    never = asyncio.Event()

    async def cut_short(job: Job, delivery: Delivery) -> DeliveryReceipt:
        await never.wait()  # the process "dies" while posting: nothing is recorded
        raise AssertionError

    harness.events.deliver_with = cut_short
    posted, cut = await harness.submit(), await harness.submit()
    await wait_until(lambda: harness.events.kinds().count("deliver") == 2, 5, "both deliveries under way")
    # The next process, on the same database; the other job is not posted, or Discord cannot tell.
    events = RecordedEvents()
    events.posted = {posted.id: DeliveryReceipt(CHANNEL, 4242), cut.id: other}
    after = JobService(
        store=harness.store,
        generator=harness.generator,  # type: ignore[arg-type]
        policy=Policy(harness.store, bot_default=Limit(100_000, "day"), global_budget=None),
        weights=QualityWeights(),
        max_concurrent=4,
        max_per_member=2,
        spool_dir=tmp_path,
    )
    after.events = events
    await after.recover()
    await after.close()
    delivered = await harness.store.get_job(posted.id)
    assert delivered is not None and delivered.state == "delivered" and delivered.result_message_id == 4242
    assert (await harness.store.get_job(cut.id)).state == "interrupted"  # type: ignore[union-attr]
    assert await harness.used() == posted.cost
    assert [value for kind, value in events.seen if kind == "interrupted"] == [cut.id]


async def waiting_out_a_429(harness: Harness, monkeypatch: pytest.MonkeyPatch, *, retry_after: float) -> Job:
    """A job the generator answered with a 429, now waiting ``retry_after`` seconds to be sent again."""
    monkeypatch.setattr(jobs_module, "MIN_RATE_LIMIT_WAIT", 0.01)
    harness.generator.errors = [RateLimited(retry_after=retry_after)]
    job = await harness.submit()
    await harness.events.wait_for("rate-limited")
    return job


async def failing_write(*args: Any, **kwargs: Any) -> bool:
    raise ConnectionResetError("store hiccup")


async def test_a_cancel_that_cannot_be_written_sends_a_429_job_again_in_its_time(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await waiting_out_a_429(harness, monkeypatch, retry_after=0.3)
    real_fail_job = harness.store.fail_job
    monkeypatch.setattr(harness.store, "fail_job", failing_write)
    with pytest.raises(ConnectionResetError):
        await harness.service.cancel(job.id, actor_id=MEMBER)
    monkeypatch.setattr(harness.store, "fail_job", real_fail_job)
    # Not stranded: sent again once its wait is over (not before), delivered and charged.
    assert (await harness.settled(job)).state == "delivered"
    assert harness.generator.posts == 2
    assert harness.generator.post_times[1] - harness.generator.post_times[0] >= 0.29
    assert await harness.used() == job.cost


async def test_a_cancel_written_whose_answer_was_lost_is_not_sent_again(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await waiting_out_a_429(harness, monkeypatch, retry_after=0.2)
    real_fail_job = harness.store.fail_job

    async def commits_then_fails(*args: Any, **kwargs: Any) -> bool:
        await real_fail_job(*args, **kwargs)
        raise ConnectionResetError("the answer was lost after COMMIT")

    monkeypatch.setattr(harness.store, "fail_job", commits_then_fails)
    with pytest.raises(ConnectionResetError):
        await harness.service.cancel(job.id, actor_id=MEMBER)
    await asyncio.sleep(0.4)  # past the wait
    assert harness.generator.posts == 1 and "deliver" not in harness.events.kinds()
    assert (await harness.store.get_job(job.id)).state == "cancelled"  # type: ignore[union-attr]
    assert await harness.used() == 0


async def test_a_cancel_written_after_the_429_wait_ran_out_still_wins(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await waiting_out_a_429(harness, monkeypatch, retry_after=0.05)
    real_fail_job = harness.store.fail_job

    async def slow_fail_job(*args: Any, **kwargs: Any) -> bool:
        await asyncio.sleep(0.3)  # the wait runs out meanwhile
        return await real_fail_job(*args, **kwargs)

    monkeypatch.setattr(harness.store, "fail_job", slow_fail_job)
    assert await harness.service.cancel(job.id, actor_id=MEMBER)
    assert (await harness.settled(job)).state == "cancelled"
    await asyncio.sleep(0.1)
    assert harness.generator.posts == 1 and await harness.used() == 0


@pytest.mark.parametrize("retrying_start", [False, True])
async def test_a_cancel_that_cannot_be_written_puts_a_waiting_job_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, retrying_start: bool
) -> None:
    monkeypatch.setattr(jobs_module, "START_RETRY", 0.1)
    gate = harness.hold_deliveries()
    first, second = await harness.submit(), await harness.submit()
    third = await harness.submit()  # queued behind the member's two places
    real_mark_running = harness.store.mark_running
    if retrying_start:
        monkeypatch.setattr(harness.store, "mark_running", failing_write)
        gate.set()
        await wait_until(lambda: third.id in harness.service._start_retries, 2, "the start to wait for its retry")
        monkeypatch.setattr(harness.store, "mark_running", real_mark_running)
    real_fail_job = harness.store.fail_job
    monkeypatch.setattr(harness.store, "fail_job", failing_write)
    with pytest.raises(ConnectionResetError):
        await harness.service.cancel(third.id, actor_id=MEMBER)
    monkeypatch.setattr(harness.store, "fail_job", real_fail_job)
    assert harness.service.waiting(third.id)  # a second press can still cancel it
    gate.set()
    for job in (first, second, third):
        assert (await harness.settled(job)).state == "delivered"


@pytest.mark.parametrize("first_written", [True, False])
async def test_a_second_cancel_during_the_first_ones_write_waits_for_its_outcome(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, first_written: bool
) -> None:
    gate = await harness.fill_members_places()
    queued = await harness.submit()
    real_fail_job = harness.store.fail_job
    writing, finish = asyncio.Event(), asyncio.Event()

    async def slow_write(*args: Any, **kwargs: Any) -> bool:
        monkeypatch.setattr(harness.store, "fail_job", real_fail_job)  # the second press's write goes through
        writing.set()
        await finish.wait()
        if not first_written:
            raise ConnectionResetError("store hiccup")
        return await real_fail_job(*args, **kwargs)

    monkeypatch.setattr(harness.store, "fail_job", slow_write)
    first_press = asyncio.create_task(harness.service.cancel(queued.id, actor_id=MEMBER))
    await writing.wait()
    second_press = asyncio.create_task(harness.service.cancel(queued.id, actor_id=MEMBER))
    await asyncio.sleep(0.05)
    assert not second_press.done()  # it waits for the first press's write, whatever that gives
    finish.set()
    if first_written:
        assert await first_press and not await second_press
        assert await harness.service.was_cancelled(queued.id)
    else:
        # The first write failed and put the job back: the second press cancels it.
        with pytest.raises(ConnectionResetError):
            await first_press
        assert await second_press
    assert (await harness.settled(queued)).state == "cancelled"
    assert not harness.service.waiting(queued.id)
    gate.set()
    await asyncio.sleep(0.05)
    assert await harness.used() == 2 * queued.cost  # only the two jobs in flight are charged


async def test_a_job_that_cannot_be_taken_back_runs_on_rather_than_wait_unseen(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = await harness.fill_members_places()
    queued = await harness.submit()
    real_fail_job = harness.store.fail_job
    monkeypatch.setattr(harness.store, "fail_job", failing_write)
    assert not await harness.service.abandon(queued, "Discord refused the first response")  # not taken back
    monkeypatch.setattr(harness.store, "fail_job", real_fail_job)
    assert harness.service.position(queued.id) == 0  # back in line, first
    gate.set()
    assert (await harness.settled(queued)).state == "delivered"


async def test_a_request_written_while_the_bot_begins_to_stop_is_given_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_reserve = harness.store.reserve
    writing = asyncio.Event()
    release = asyncio.Event()

    async def slow_reserve(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        await release.wait()
        return await real_reserve(*args, **kwargs)

    monkeypatch.setattr(harness.store, "reserve", slow_reserve)
    submitting = asyncio.create_task(harness.submit())
    await writing.wait()
    closing = asyncio.create_task(harness.service.close())
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(jobs_module.Stopping):
        await submitting
    await closing
    assert await harness.used() == 0  # reserved, then given back
    assert harness.generator.posts == 0
    [job] = await harness.store.jobs_in_states(["cancelled"])
    assert job.user_id == MEMBER


@pytest.mark.parametrize("free_slot", [True, False])
async def test_a_request_written_as_the_bot_stops_that_cannot_be_given_back_is_answered_as_accepted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, free_slot: bool
) -> None:
    if not free_slot:
        gate = await harness.fill_members_places()
    real_reserve = harness.store.reserve
    writing, release = asyncio.Event(), asyncio.Event()

    async def slow_reserve(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        await release.wait()
        return await real_reserve(*args, **kwargs)

    monkeypatch.setattr(harness.store, "reserve", slow_reserve)
    real_fail_job = harness.store.fail_job
    monkeypatch.setattr(harness.store, "fail_job", failing_write)
    submitting = asyncio.create_task(harness.service.submit(harness.request()))
    await writing.wait()
    harness.service.scheduler.stop_starting()  # what close() does first
    release.set()
    outcome = await submitting
    monkeypatch.setattr(harness.store, "fail_job", real_fail_job)
    # Charged and left for the next start, so the member sees its status rather than "nothing was charged".
    assert isinstance(outcome, jobs_module.Accepted)
    assert (outcome.position is None) is free_slot
    row = await harness.store.get_job(outcome.job.id)
    assert row is not None and row.state == ("running" if free_slot else "queued")
    assert harness.generator.posts == (0 if free_slot else 2)
    if not free_slot:
        gate.set()


def test_an_http_client_errors_request_is_never_stored_with_the_job() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    url = URL("https://discord.com/api/v10/webhooks/1/interaction-token-secret/messages/@original")
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": "Bot bot-token-secret"}))
    request = aiohttp.RequestInfo(url, "PATCH", headers, url)
    error = aiohttp.ClientResponseError(request, (), status=502, message="Bad Gateway")
    assert "secret" in repr(error)  # what used to be stored
    assert jobs_module.stored_error_text(error) == "ClientResponseError (HTTP 502)"
    assert jobs_module.stored_error_text(aiohttp.ClientConnectionError(str(url))) == "ClientConnectionError"
    assert jobs_module.stored_error_text(ValueError("odd")) == "ValueError('odd')"
