"""The fair queue: caps, round robin across members, positions, pauses and cancels."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from imaginebot import scheduler as scheduler_module
from imaginebot.scheduler import FairScheduler


class Recorder:
    """A runner that records start order and holds each job until released."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.gates: dict[int, asyncio.Event] = {}

    async def run(self, job_id: int) -> None:
        self.started.append(job_id)
        gate = self.gates.setdefault(job_id, asyncio.Event())
        await gate.wait()

    def release(self, job_id: int) -> None:
        self.gates.setdefault(job_id, asyncio.Event()).set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_caps_in_flight_bot_wide_and_per_member() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=3, max_per_member=2)
    for job_id in range(1, 6):
        scheduler.submit(job_id, member_id=7)
    scheduler.submit(10, member_id=8)
    await settle()
    # Member 7 may have two in flight; member 8's job takes the third slot.
    assert recorder.started == [1, 2, 10]
    assert scheduler.in_flight == 3
    recorder.release(1)
    await settle()
    assert recorder.started == [1, 2, 10, 3]
    await scheduler.close()


async def test_a_restored_queue_starts_round_robin_in_the_order_given() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=3, max_per_member=2)
    # After a restart: member 7's three jobs come first, then member 8's and member 9's.
    scheduler.restore([(1, 7), (2, 7), (3, 7), (4, 8), (5, 9)])
    await settle()
    # Submitted one by one, member 7 would have taken two of the three places before 8 and 9 were queued.
    assert recorder.started == [1, 4, 5]
    assert scheduler.positions() == {2: 0, 3: 1}
    recorder.release(4)
    await settle()
    assert recorder.started == [1, 4, 5, 2]
    await scheduler.close()


async def test_members_served_before_a_restart_come_after_those_who_start_waiting_now() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=1)
    scheduler.submit(0, member_id=999)  # busy: nothing restored starts yet
    await settle()
    scheduler.restore([(2, 8), (3, 7)], served={7})  # member 7 had a job running when the bot stopped
    scheduler.submit(4, member_id=9)  # a member who starts waiting now
    assert scheduler.positions() == {2: 0, 4: 1, 3: 2}
    await scheduler.close()


async def test_round_robin_one_members_burst_does_not_delay_others() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=10)
    scheduler.submit(0, member_id=999)  # occupies the only slot
    await settle()
    for job_id in range(1, 11):  # one member's ten jobs
        scheduler.submit(job_id, member_id=1)
    for member in range(2, 6):  # then four other members, one job each
        scheduler.submit(100 + member, member_id=member)
    positions = scheduler.positions()
    # Every other member's first job comes before the burst member's second job.
    for member in range(2, 6):
        assert positions[100 + member] < positions[2]
    assert positions[1] == 0
    order = []
    running = 0
    while len(order) < 14:
        recorder.release(recorder.started[running])
        running += 1
        await settle()
        order = recorder.started[1:]
    assert order[:5] == [1, 102, 103, 104, 105]
    assert order[5:] == list(range(2, 11))
    await scheduler.close()


async def test_positions_count_jobs_that_would_start_first_and_change_on_cancel() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=5)
    scheduler.submit(1, member_id=1)
    await settle()
    scheduler.submit(2, member_id=1)
    scheduler.submit(3, member_id=1)
    scheduler.submit(4, member_id=2)
    assert scheduler.position(1) is None  # running, not queued
    # Member 2 has not had a turn yet and member 1 just did, so member 2 goes first.
    assert scheduler.positions() == {4: 0, 2: 1, 3: 2}
    assert scheduler.cancel(4) is True
    assert scheduler.cancel(4) is False
    assert scheduler.positions() == {2: 0, 3: 1}
    await scheduler.close()


async def test_a_member_back_right_after_their_turn_waits_behind_those_still_waiting() -> None:
    """One slot; A, B and C each queue two jobs. A's second job ends and A asks again at once (a quick re-roll)
    while C's second job still waits: C has waited since its first turn, so C goes next, not A."""
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=2)
    for job_id, member in ((1, "A"), (11, "A"), (2, "B"), (12, "B"), (3, "C"), (13, "C")):
        scheduler.submit(job_id, member_id=ord(member))
    await settle()
    for running in (1, 2, 3, 11):
        assert recorder.started[-1] == running
        recorder.release(running)
        await settle()
    assert recorder.started[-1] == 12  # and A has nothing queued or running now
    scheduler.submit(21, member_id=ord("A"))
    assert scheduler.positions() == {13: 0, 21: 1}
    recorder.release(12)
    await settle()
    assert recorder.started[-1] == 13
    recorder.release(13)
    await settle()
    assert recorder.started[-1] == 21
    recorder.release(21)
    await settle()
    scheduler.submit(31, member_id=ord("A"))  # nobody waits now: A's old turn is forgotten, and A starts at once
    await settle()
    assert recorder.started[-1] == 31
    await scheduler.close()


async def test_once_nobody_waits_an_old_turn_is_forgotten() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=2)
    scheduler.submit(1, member_id=1)  # A runs
    await settle()
    scheduler.submit(2, member_id=2)  # B waits
    recorder.release(1)  # A goes idle while B waits (A's turn is kept), then B's job starts: nobody waits
    await settle()
    assert recorder.started[-1] == 2
    scheduler.submit(3, member_id=1)  # A asks, while nobody waits: a fresh start
    scheduler.submit(4, member_id=3)  # C asks after A
    recorder.release(2)
    await settle()
    assert recorder.started[-1] == 3
    await scheduler.close()


async def test_a_quick_rerolling_member_gets_no_more_turns_than_the_others() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=1)
    next_id = iter(range(1000, 2000))
    member_of: dict[int, int] = {}

    def submit(member: int) -> None:
        job_id = next(next_id)
        member_of[job_id] = member
        scheduler.submit(job_id, member_id=member)

    for member in (2, 3):  # B and C each have a backlog
        for _ in range(6):
            submit(member)
    submit(1)
    await settle()
    starts: list[int] = []
    for _ in range(12):
        job_id = recorder.started[-1]
        starts.append(member_of[job_id])
        recorder.release(job_id)
        await settle()  # the next job starts
        if member_of[job_id] == 1:  # A asks again the moment each result lands
            submit(1)
            await settle()
    assert starts[3:] == [2, 3, 1] * 3, starts  # once under way, one turn in three, like B and C
    await scheduler.close()


async def test_a_member_at_their_cap_is_counted_after_the_others_in_positions() -> None:
    """A job whose member is at their cap waits for one of that member's own jobs to end; another member's job
    starts as soon as any slot frees: it is the one nearer to starting."""
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=2, max_per_member=1)
    scheduler.submit(1, member_id=1)  # A runs 1
    scheduler.submit(10, member_id=2)  # B runs 10
    await settle()
    scheduler.submit(2, member_id=1)  # A waits, at their cap
    scheduler.submit(11, member_id=2)  # B waits, at their cap
    scheduler.submit(20, member_id=4)  # D waits
    recorder.release(10)  # B's job ends: D's starts (never served), B is under the cap again
    await settle()
    assert recorder.started == [1, 10, 20]
    assert scheduler.positions() == {11: 0, 2: 1}  # A was served before B, but A's next waits for A's job 1
    assert scheduler.position(11) == 0 and scheduler.position(2) == 1
    recorder.release(20)  # any slot but A's own frees: B's job starts, as its position said
    await settle()
    assert recorder.started[-1] == 11
    await scheduler.close()


async def test_pause_delays_new_starts_without_failing_them() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=5, max_per_member=5)
    scheduler.pause(0.2)
    scheduler.submit(1, member_id=1)
    await asyncio.sleep(0.05)
    assert recorder.started == []
    assert scheduler.position(1) == 0
    await asyncio.sleep(0.3)
    assert recorder.started == [1]
    await scheduler.close()


async def test_a_crashing_job_does_not_stop_the_queue() -> None:
    started: list[int] = []

    async def run(job_id: int) -> None:
        started.append(job_id)
        if job_id == 1:
            raise RuntimeError("boom")

    scheduler = FairScheduler(run=run, max_concurrent=1, max_per_member=1)
    scheduler.submit(1, member_id=1)
    scheduler.submit(2, member_id=1)
    await settle()
    assert started == [1, 2]
    await scheduler.close()


@pytest.mark.parametrize("members", [3, 50])
async def test_every_member_gets_a_turn_before_anyone_gets_a_second(members: int) -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=3)
    scheduler.submit(-1, member_id=-1)
    await settle()
    job_id = 0
    for _ in range(3):
        for member in range(members):
            job_id += 1
            scheduler.submit(member * 1000 + job_id, member_id=member)
    ranked = sorted(scheduler.positions().items(), key=lambda item: item[1])
    first_round = [job for job, _ in ranked[:members]]
    assert sorted(job // 1000 for job in first_round) == list(range(members))
    await scheduler.close()


async def test_a_claimed_place_counts_in_flight_until_its_job_runs_and_ends() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=2)
    assert scheduler.claim(1) is True
    assert scheduler.claim(2) is False  # the only slot is taken, though no job runs yet
    scheduler.submit(20, member_id=2)
    await settle()
    assert recorder.started == []
    assert scheduler.positions() == {20: 0}

    scheduler.start_claimed(10, member_id=1)
    await settle()
    assert recorder.started == [10]
    recorder.release(10)
    await settle()
    assert recorder.started == [10, 20]
    await scheduler.close()


async def test_a_released_claim_gives_its_slot_to_the_queue() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=1)
    assert scheduler.claim(1)
    scheduler.submit(20, member_id=2)
    scheduler.release(1)  # e.g. the member's quota refused the job
    await settle()
    assert recorder.started == [20]
    assert scheduler.claim(1) is False
    await scheduler.close()


async def test_no_claim_that_would_jump_the_queue_or_break_a_limit() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=3, max_per_member=1)
    scheduler.submit(1, member_id=1)
    scheduler.submit(2, member_id=1)  # waits: member 1 is at their limit
    await settle()
    assert scheduler.claim(1) is False  # at their limit, and their own job waits first
    assert scheduler.claim(2) is True  # a free slot nobody waiting may use
    scheduler.start_claimed(3, member_id=2)
    scheduler.pause(0.2)
    assert scheduler.claim(4) is False  # paused: the job must queue
    await scheduler.close()
    assert scheduler.claim(5) is False  # closed


async def test_a_claim_does_not_overtake_jobs_waiting_for_the_end_of_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=2, max_per_member=1)
    scheduler.pause(60)
    scheduler.submit(1, member_id=1)
    # The pause is over, but the queue has not been woken yet: member 1's job must start before a new one.
    later = time.monotonic() + 61
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: later)
    assert scheduler.claim(2) is False
    await scheduler.close()


async def test_a_claimed_member_waits_behind_others_for_their_next_job() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=2, max_per_member=2)
    assert scheduler.claim(1)
    scheduler.start_claimed(1, member_id=1)
    scheduler.submit(2, member_id=9)  # takes the second slot
    await settle()
    scheduler.submit(3, member_id=1)
    scheduler.submit(4, member_id=5)
    # Member 1 was just served, member 5 never: member 5 goes first.
    assert scheduler.positions() == {4: 0, 3: 1}
    await scheduler.close()


async def test_a_claim_started_after_close_runs_nothing() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=1)
    assert scheduler.claim(1)
    await scheduler.close()
    scheduler.start_claimed(1, member_id=1)
    await settle()
    assert recorder.started == []
    assert scheduler.in_flight == 0


async def test_one_jobs_position_matches_the_whole_queues_order() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=2, max_per_member=1)
    rng = random.Random(5)
    for job_id in range(1, 301):
        scheduler.submit(job_id, member_id=rng.randrange(12))
        if rng.random() < 0.2 and recorder.started:
            recorder.release(recorder.started[rng.randrange(len(recorder.started))])
            await settle()
        if rng.random() < 0.1:
            scheduler.cancel(rng.randrange(1, job_id + 1))
        everything = scheduler.positions()
        assert {job: scheduler.position(job) for job in everything} == everything
    assert len(scheduler.positions()) > 50  # the queue got deep
    await scheduler.close()


async def test_a_job_put_back_first_goes_before_its_members_later_jobs() -> None:
    recorder = Recorder()
    scheduler = FairScheduler(run=recorder.run, max_concurrent=1, max_per_member=1)
    scheduler.submit(0, member_id=9)  # holds the only slot
    await settle()
    scheduler.submit(2, member_id=1)
    scheduler.submit(3, member_id=1)
    scheduler.submit(1, member_id=1, first=True)  # the member's earliest, back after the bot's own failure
    assert [scheduler.position(job_id) for job_id in (1, 2, 3)] == [0, 1, 2]
    await scheduler.close()
