"""Running blocking work in a worker thread when the caller may be cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
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
        while not work.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([work])
        if not work.cancelled():
            work.exception()  # retrieved: the caller's cancellation is what it gets
        raise
