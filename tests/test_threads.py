"""imaginebot.threads: a caller of work in worker threads, cancelled, still waits for the threads to end."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from imaginebot.threads import gather_to_the_end, to_thread_to_the_end


async def test_the_result_and_an_error_come_back_as_from_to_thread() -> None:
    assert await to_thread_to_the_end(lambda a, b: a + b, 2, 3) == 5

    def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await to_thread_to_the_end(broken)


@pytest.mark.parametrize("cancels", [1, 2, 3])
async def test_a_cancelled_caller_moves_on_only_once_the_thread_has_ended(cancels: int) -> None:
    """Cancelled once (a stopping bot), or again while it waits (asyncio.gather's caller cancelling its children
    a second time): the caller gets CancelledError only after the thread is done, never while it still runs."""
    loop = asyncio.get_running_loop()
    started, ended = asyncio.Event(), threading.Event()

    def work() -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.3)
        ended.set()

    task = asyncio.create_task(to_thread_to_the_end(work))
    await started.wait()
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0.02)
    assert not task.done(), "the caller moved on while the thread was still running"
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set()


async def test_a_failure_of_the_thread_after_the_cancel_is_not_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller asked to stop gets CancelledError; the thread's own error is not logged as never retrieved."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    def work() -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.1)
        raise OSError("disk full")

    task = asyncio.create_task(to_thread_to_the_end(work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_gather_to_the_end_returns_the_results_in_order() -> None:
    async def after(seconds: float, value: int) -> int:
        await asyncio.sleep(seconds)
        return value

    assert await gather_to_the_end(after(0.03, 1), after(0.0, 2), after(0.01, 3)) == [1, 2, 3]


async def test_gather_to_the_end_cancelled_waits_for_every_child() -> None:
    """One child's thread ends quickly, the other's slowly: asyncio.gather would raise once the quick one ended."""
    loop = asyncio.get_running_loop()
    started = asyncio.Semaphore(0)
    ended: list[float] = []

    def work(seconds: float) -> None:
        loop.call_soon_threadsafe(started.release)
        time.sleep(seconds)
        ended.append(seconds)

    task = asyncio.create_task(gather_to_the_end(to_thread_to_the_end(work, 0.01), to_thread_to_the_end(work, 0.3)))
    for _ in range(2):
        await started.acquire()
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(ended) == [0.01, 0.3]


async def test_gather_to_the_end_a_failing_child_stops_the_others_then_raises() -> None:
    stopped = asyncio.Event()

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("broken")

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.02)  # some clean-up of its own before it ends
            stopped.set()
            raise

    with pytest.raises(ValueError, match="broken"):
        await gather_to_the_end(fails(), waits())
    assert stopped.is_set()
