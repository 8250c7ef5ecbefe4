"""Download slots: a bound on downloads at work, which downloads waiting for their server do not count against."""

from __future__ import annotations

import asyncio

import pytest

from imaginebot.generator.slots import DownloadSlots, SlotHold

PATIENCE = 0.01


async def settle() -> None:
    """Let every task that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def start(slots: DownloadSlots, started: list[int], number: int, release: asyncio.Event) -> None:
    async with slots.hold():
        started.append(number)
        await release.wait()


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError):
        DownloadSlots(0)


async def test_at_most_the_slots_work_at_once_and_the_others_start_in_turn() -> None:
    slots = DownloadSlots(2, patience=PATIENCE)
    started: list[int] = []
    gates = [asyncio.Event() for _ in range(5)]
    tasks = [asyncio.create_task(start(slots, started, n, gates[n])) for n in range(5)]
    await settle()
    assert started == [0, 1] and slots.waiting == 3
    gates[1].set()
    await settle()
    assert started == [0, 1, 2]
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert started == [0, 1, 2, 3, 4]
    assert slots.free == 2 and slots.waiting == 0


async def test_a_quick_answer_keeps_the_slot() -> None:
    slots = DownloadSlots(1, patience=PATIENCE)
    async with slots.hold() as hold:
        assert await hold.answer(asyncio.sleep(0, "answer")) == "answer"
        assert hold.held and slots.free == 0
        await hold.take_for_body()
        assert hold.held
    assert slots.free == 1 and slots.waiting_for_server == 0


async def test_a_slow_server_gives_the_slot_to_the_next_download_until_it_answers() -> None:
    slots = DownloadSlots(1, patience=PATIENCE)
    answer = asyncio.get_running_loop().create_future()
    other_started = asyncio.Event()

    async def other() -> None:
        async with slots.hold():
            other_started.set()
            await asyncio.sleep(0.05)

    async with slots.hold() as hold:
        waiting = asyncio.create_task(hold.answer(answer))
        task = asyncio.create_task(other())
        await asyncio.wait_for(other_started.wait(), 1)  # after the patience, not before the answer came
        assert not hold.held and slots.waiting_for_server == 1
        answer.set_result("late")
        assert await waiting == "late"
        assert slots.waiting_for_server == 0
        await hold.take_for_body()  # waits for the other download to finish
        assert hold.held and task.done()
    assert slots.free == 1


async def test_an_answered_download_reads_its_body_before_new_downloads_start() -> None:
    slots = DownloadSlots(1, patience=PATIENCE)
    order: list[str] = []
    answer = asyncio.get_running_loop().create_future()

    async def slow_server_download() -> None:
        async with slots.hold() as hold:
            await hold.answer(answer)
            await hold.take_for_body()
            order.append("body")

    async def new_download(name: str, hold_for: float) -> None:
        async with slots.hold():
            order.append(name)
            await asyncio.sleep(hold_for)

    first = asyncio.create_task(slow_server_download())
    await asyncio.sleep(PATIENCE * 3)  # it gave its slot back
    busy = asyncio.create_task(new_download("busy", 0.05))
    await settle()
    queued = [asyncio.create_task(new_download(f"new {n}", 0)) for n in range(2)]
    await settle()
    answer.set_result(None)  # answered while "busy" has the slot and two new downloads wait for it
    await asyncio.gather(first, busy, *queued)
    assert order == ["busy", "body", "new 0", "new 1"]


async def test_only_so_many_wait_for_their_server_without_a_slot() -> None:
    slots = DownloadSlots(3, patience=PATIENCE, max_waiting=1)
    answers = [asyncio.get_running_loop().create_future() for _ in range(3)]
    holds = [slots.hold() for _ in range(3)]
    for hold in holds:
        await hold.__aenter__()
    waits = [asyncio.create_task(hold.answer(answer)) for hold, answer in zip(holds, answers, strict=True)]
    await asyncio.sleep(PATIENCE * 5)
    assert slots.waiting_for_server == 1
    assert sum(hold.held for hold in holds) == 2
    for answer in answers:
        answer.set_result(None)
    await asyncio.gather(*waits)
    for hold in holds:
        await hold.take_for_body()
        await hold.__aexit__(None, None, None)
    assert slots.free == 3 and slots.waiting_for_server == 0


async def test_cancelled_downloads_leave_no_slot_taken() -> None:
    slots = DownloadSlots(1, patience=PATIENCE)
    gate = asyncio.Event()
    started: list[int] = []
    holder = asyncio.create_task(start(slots, started, 0, gate))
    await settle()
    waiters = [asyncio.create_task(start(slots, started, n, gate)) for n in (1, 2)]
    await settle()
    waiters[0].cancel()
    await settle()
    gate.set()
    await asyncio.gather(holder, waiters[1], return_exceptions=True)
    assert started == [0, 2]
    assert slots.free == 1 and slots.waiting == 0


async def test_a_download_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    slots = DownloadSlots(1, patience=PATIENCE)
    first = SlotHold(slots)
    await first.__aenter__()
    second = asyncio.create_task(SlotHold(slots).__aenter__())
    third_hold = SlotHold(slots)
    third = asyncio.create_task(third_hold.__aenter__())
    await settle()
    first.give_back()  # hands the slot to the second...
    second.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(second, return_exceptions=True)
    await asyncio.wait_for(third, 1)
    assert third_hold.held and slots.free == 0
    third_hold.give_back()
    assert slots.free == 1


async def test_a_cancelled_wait_for_the_server_is_no_longer_counted() -> None:
    slots = DownloadSlots(1, patience=PATIENCE)
    async with slots.hold() as hold:
        waiting = asyncio.create_task(hold.answer(asyncio.sleep(10)))
        await asyncio.sleep(PATIENCE * 3)
        assert slots.waiting_for_server == 1
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert slots.waiting_for_server == 0 and not hold.held
    assert slots.free == 1
