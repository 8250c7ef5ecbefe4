"""Running blocking work in a worker thread when the caller may be cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def to_thread_to_the_end(function: Callable[..., T], *args: object) -> T:
    """``asyncio.to_thread``, except that a cancelled caller still waits for the thread to end (a thread cannot be
    stopped). Use it for work that creates files: cancelled, the caller removes what it made, and a thread still
    running would create its file after that (a job's work folder again, a spool file no one knows of)."""
    work = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # Cancelled again meanwhile (a caller that cancels its tasks twice, as asyncio.gather's caller may): keep
        # waiting. asyncio.wait never cancels what it waits for, where "await work" would cancel the future and
        # leave the thread running unwatched.
        await wait_to_the_end([work])
        if not work.cancelled():
            work.exception()  # retrieved: the caller's cancellation is what it gets
        raise


async def gather_to_the_end(*awaitables: Awaitable[T]) -> list[T]:
    """``asyncio.gather``, except that it never returns or raises while one of its children still runs.

    ``asyncio.gather`` raises as soon as one child ends cancelled, while the others may still be waiting for their
    worker threads (``to_thread_to_the_end``): the caller would then remove the files those threads are about to
    write. Here, when the caller is cancelled (however often) or a child fails, every child is cancelled and waited
    for; then the cancellation, or the first child's error, is raised.
    """
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        for task in await wait_to_the_end(tasks):
            if not task.cancelled():
                task.exception()  # retrieved: what the caller gets is the error raised below
        raise


async def wait_to_the_end(tasks: Sequence[asyncio.Future[T]]) -> Sequence[asyncio.Future[T]]:
    """Wait until every one of ``tasks`` is done, even if the caller is cancelled meanwhile (once or more; the
    cancellation is not raised here: the caller is already handling one). Returns ``tasks``."""
    while not all(task.done() for task in tasks):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait(tasks)
    return tasks
