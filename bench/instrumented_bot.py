"""The real bot (``bot.main()``) with measuring instruments attached, for ``bench/burst.py``.

Run from the repo root as ``python -m bench.instrumented_bot`` with the bot's usual environment plus:

- ``BENCH_STATS_PATH``: where to write the measurements as JSON when the bot exits (after SIGTERM).
- ``BENCH_CPROFILE_PATH`` (optional): cProfile the event loop's thread from SIGUSR1 to SIGUSR2 (or exit) and dump
  the stats there (``python -m pstats FILE``).

What is measured, without changing the bot's code (only discord.py hooks and a wrapped ``setup_hook``):

- event-loop lag: a task sleeps 10 ms in a loop and records by how much each wake-up came late;
- where long stalls happen: a watchdog thread samples the loop thread's stack while the loop is stuck;
- when each INTERACTION_CREATE was parsed and when its callback request left (``time.monotonic()``, the same
  clock in every process of the machine, so the benchmark can line them up with the fakes' records);
- every Discord REST request the bot made, as discord.py's request methods saw it: kind, start, end, status (no
  URL, no token, no header);
- every garbage collection (generation, start, duration), through ``gc.callbacks``;
- CPU time (getrusage) and the resident-set high-water mark (VmHWM) at exit;
- how often the gateway reader waited for the bot to answer, and rested (``cogs/pacing.py``), over the whole run.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import hashlib
import json
import logging
import os
import re
import resource
import signal
import sys
import threading
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import discord
from discord.state import ConnectionState
from discord.webhook.async_ import AsyncWebhookAdapter

import bot as bot_module

log = logging.getLogger(__name__)

STATS_ENV = "BENCH_STATS_PATH"
PROFILE_ENV = "BENCH_CPROFILE_PATH"
TICK_SECONDS = 0.010
# A stall longer than this gets the loop thread's stack sampled, every STACK_EVERY seconds while it lasts.
STALL_SECONDS = 0.040
STACK_EVERY = 0.020
# The watchdog needs the GIL each time it looks, taking it from the loop thread: as often as it samples a stall,
# no more (every 10 ms cost the bot ~0.03-0.06 ms of CPU per job in the 500-member burst, bench.compare, 5 runs).
WATCH_EVERY = STACK_EVERY
MAX_STACKS = 300
STACK_DEPTH = 14

_CALLBACK = re.compile(r"/interactions/(\d+)/[^/]+/callback$")
_WEBHOOK = re.compile(r"/webhooks/\d+/([^/]+)(/messages/[^/?]+)?$")
_NUMBER = re.compile(r"/\d+")


def token_key(token: str) -> str:
    """A short digest that names an interaction token in the measurements without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def request_kind(method: str, path: str) -> tuple[str, str | None]:
    """A Discord request as ``("POST callback", interaction id)`` or ``("PATCH webhook message", token_key)``;
    other routes with their ids replaced by ``{id}`` and no key. Tokens never appear in the result."""
    if match := _CALLBACK.search(path):
        return f"{method} callback", match.group(1)
    if match := _WEBHOOK.search(path):
        return f"{method} webhook{' message' if match.group(2) else ''}", token_key(match.group(1))
    return f"{method} {_NUMBER.sub('/{id}', path.split('/api/v10', 1)[-1])}", None


class Instruments:
    """Everything the wrapper records in the bot process; written out once, at exit."""

    def __init__(self, stats_path: Path, profile_path: Path | None) -> None:
        self.stats_path = stats_path
        self.profile_path = profile_path
        self.tick_at = array("d")  # when each 10 ms sleep began
        self.tick_lag = array("d")  # how late it woke up
        self.last_wake = time.monotonic()
        self.stacks: list[dict[str, Any]] = []
        self.interactions_parsed: dict[int, float] = {}
        self.callbacks_sent: dict[int, float] = {}
        # (kind, key, start, end, status): key = interaction id or token_key(), status -1 = no answer
        self.requests: list[tuple[str, str | None, float, float, int]] = []
        # (method, URL, start, end, status) as recorded during the run
        self._raw_requests: list[tuple[str, str, float, float, int]] = []
        self.profile: cProfile.Profile | None = None
        # (generation, start, seconds) of each cyclic garbage collection
        self.collections: list[tuple[int, float, float]] = []
        self._collection_began = 0.0
        self.profile_window: list[float] = []
        self.started_at = time.monotonic()
        self._stopping = threading.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._written = False

    # -- the event loop -----------------------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the lag monitor on the bot's loop, the stall watchdog thread and the profiling signals."""
        self.last_wake = time.monotonic()
        self._monitor = loop.create_task(self._measure_lag(), name="bench-loop-monitor")
        threading.Thread(target=self._watch_stalls, name="bench-stall-watchdog", daemon=True).start()
        gc.callbacks.append(self._collection)
        if self.profile_path is not None:
            loop.add_signal_handler(signal.SIGUSR1, self.start_profile)
            loop.add_signal_handler(signal.SIGUSR2, self.stop_profile)

    async def _measure_lag(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(TICK_SECONDS)
            woke = time.monotonic()
            self.last_wake = woke
            self.tick_at.append(began)
            self.tick_lag.append(woke - began - TICK_SECONDS)

    def _watch_stalls(self) -> None:
        # A thread still runs while the loop thread executes Python (the GIL is handed over every 5 ms), so it
        # can see what the loop is stuck in. A C call that keeps the GIL shows up as the frame that made it.
        loop_thread = threading.main_thread().ident
        last_sample = 0.0
        while not self._stopping.wait(WATCH_EVERY):
            now = time.monotonic()
            behind = now - self.last_wake - TICK_SECONDS
            if behind < STALL_SECONDS or now - last_sample < STACK_EVERY or len(self.stacks) >= MAX_STACKS:
                continue
            frame = sys._current_frames().get(loop_thread)
            if frame is None:
                continue
            last_sample = now
            summary = traceback.extract_stack(frame)[-STACK_DEPTH:]
            self.stacks.append(
                {
                    "at": now,
                    "stalled_for": behind,
                    "stack": [f"{_short(entry.filename)}:{entry.lineno} {entry.name}" for entry in summary],
                }
            )

    def _collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collection_began = time.monotonic()
        elif len(self.collections) < 100_000:
            began = self._collection_began
            self.collections.append((info["generation"], began, time.monotonic() - began))

    # -- profiling (SIGUSR1 / SIGUSR2 from the benchmark) ---------------------------------------------------------

    def start_profile(self) -> None:
        """Profile the loop thread from now on."""
        if self.profile is None:
            self.profile = cProfile.Profile()
            self.profile_window = [time.monotonic()]
            self.profile.enable()

    def stop_profile(self) -> None:
        """Stop profiling (the stats are dumped at exit)."""
        if self.profile is not None and len(self.profile_window) == 1:
            self.profile.disable()
            self.profile_window.append(time.monotonic())

    # -- discord.py hooks ---------------------------------------------------------------------------------------

    def record_request(self, method: str, url: str, start: float, end: float, status: int) -> None:
        """One Discord REST request: (method, URL, start, end, status); the URL is only read at exit."""
        self._raw_requests.append((method, url, start, end, status))

    def _sort_requests(self) -> None:
        """Name each recorded request (``request_kind``) and note when each interaction callback started."""
        for method, url, start, end, status in self._raw_requests:
            kind, key = request_kind(method, urlsplit(url).path)
            self.requests.append((kind, key, start, end, status))
            if kind.endswith(" callback") and key is not None:
                self.callbacks_sent[int(key)] = start

    def interaction_parsed(self, data: Any) -> None:
        """Called as discord.py starts handling an INTERACTION_CREATE."""
        self.interactions_parsed[int(data["id"])] = time.monotonic()

    # -- the result -----------------------------------------------------------------------------------------------

    def write(self) -> None:
        """Write everything measured to the stats file (once), and the profile if one was taken."""
        if self._written:
            return
        self._written = True
        self._stopping.set()
        self._sort_requests()
        self.stop_profile()
        if self.profile is not None and self.profile_path is not None:
            self.profile.dump_stats(self.profile_path)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "tick_seconds": TICK_SECONDS,
            "tick_at": list(self.tick_at),
            "tick_lag": list(self.tick_lag),
            "stall_stacks": self.stacks,
            "collections": self.collections,
            "interactions_parsed": {str(k): v for k, v in self.interactions_parsed.items()},
            "callbacks_sent": {str(k): v for k, v in self.callbacks_sent.items()},
            "requests": self.requests,
            "profile_window": self.profile_window,
            "cpu_user": usage.ru_utime,
            "cpu_system": usage.ru_stime,
            "maxrss_kib": usage.ru_maxrss,
            "vm_hwm_kib": _vm_hwm_kib(),
            "gateway_pacing": _pacing_counts(),
        }
        temporary = self.stats_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(stats))
        temporary.replace(self.stats_path)


def _pacing_counts() -> dict[str, int] | None:
    """How often the gateway reader waited for the bot to answer, and how often it then rested (cogs/pacing.py)."""
    from cogs import pacing

    if not pacing._current:
        return None
    pacer = pacing._current[0]
    return {"holds": pacer.holds, "rests": pacer.rests}


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    cwd = os.getcwd() + os.sep
    return filename.removeprefix(cwd)


def _vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def install(instruments: Instruments) -> None:
    """Hook the instruments into discord.py and the bot (before the bot object is created)."""
    original_parse = ConnectionState.parse_interaction_create
    original_setup_hook = bot_module.ImagineBot.setup_hook

    def timed(original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """discord.py's request method, recording each call's route and times (2xx is recorded as 200).

        Not an aiohttp TraceConfig: a trace makes aiohttp signal every step of every request (~35 us more per
        request, measured), which would count as the bot's CPU."""

        async def request(self: Any, route: discord.http.Route, *args: Any, **kwargs: Any) -> Any:
            start, status = time.monotonic(), -1
            try:
                result = await original(self, route, *args, **kwargs)
                status = 200
                return result
            except discord.HTTPException as error:
                status = error.status
                raise
            finally:
                instruments.record_request(route.method, route.url, start, time.monotonic(), status)

        return request

    def parse_interaction_create(self: ConnectionState, data: Any) -> None:
        instruments.interaction_parsed(data)
        original_parse(self, data)

    async def setup_hook(self: bot_module.ImagineBot) -> None:
        instruments.attach(asyncio.get_running_loop())
        await original_setup_hook(self)

    # Interaction callbacks and webhook messages go through the webhook adapter, everything else through HTTPClient.
    AsyncWebhookAdapter.request = timed(AsyncWebhookAdapter.request)  # type: ignore[method-assign]
    discord.http.HTTPClient.request = timed(discord.http.HTTPClient.request)  # type: ignore[method-assign]
    # ConnectionState collects its parse_* methods when it is created, so this must happen before the bot exists.
    ConnectionState.parse_interaction_create = parse_interaction_create  # type: ignore[method-assign]
    bot_module.ImagineBot.setup_hook = setup_hook  # type: ignore[method-assign]


def main() -> int:
    """Run ``bot.main()`` with the instruments and write the measurements when it returns."""
    stats_path = os.environ.get(STATS_ENV)
    if not stats_path:
        print(f"Cannot start: {STATS_ENV} is not set", file=sys.stderr)
        return 2
    profile_path = os.environ.get(PROFILE_ENV) or None
    instruments = Instruments(Path(stats_path), Path(profile_path) if profile_path else None)
    install(instruments)
    try:
        return bot_module.main()
    finally:
        instruments.write()


if __name__ == "__main__":
    sys.exit(main())
