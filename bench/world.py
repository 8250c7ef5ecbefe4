"""The benchmark's world: both fakes in this process, the instrumented bot in its own, and what arrived where.

The fakes record times with ``time.monotonic()``, and so does ``bench.instrumented_bot``: on Linux it is one clock
for every process of the machine, so the two sides' records can be subtracted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.measure import machine_cpu_seconds, own_cpu_seconds, process_cpu_seconds, thread_schedule_seconds
from tests.botenv import REPO, bot_environment
from tests.fakes.discord import FakeChannel, FakeDiscord, FakeGuild, FakeInteraction, FakeMember, RecordedRequest
from tests.fakes.onemin import FakeOneMin

log = logging.getLogger(__name__)

PROMPT = "a lighthouse at dusk over a calm sea, oil painting"
FAIRNESS_MEMBERS = 100
FAIRNESS_BURST_JOBS = 10
# How a failed job tells the member (cogs/imagine/_render.py: every failure says nothing was charged).
FAILURE_MARK = "not charged"
# After SIGTERM: how long the bot may take to close, and to exit once bot.main() has returned.
STOP_TIMEOUT = 30.0
EXIT_GRACE = 3.0


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation request as the fake generator saw it."""

    prompt: str
    arrived: float  # monotonic, before the body was read
    answered: float  # monotonic, when the answer was ready to send
    status: int


class TimedOneMin(FakeOneMin):
    """The fake 1min.ai, also noting when each generation request arrived and was answered, with its prompt."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrived = 0  # generation requests received so far (answered or not)
        self.generations: list[Generation] = []

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        self.arrived += 1
        raw = await request.read()  # aiohttp keeps the body, so the fake reads it again for free
        try:
            prompt = str(json.loads(raw)["promptObject"]["prompt"])
        except (ValueError, KeyError, TypeError):
            prompt = ""
        response = await super()._generate(request)
        self.generations.append(Generation(prompt, arrived, time.monotonic(), response.status))
        return response


class DeliveryTracker:
    """Follows the fake Discord's request log to see when each interaction got all its images (or a failure).

    It reads only the requests added since the last ``poll()``, so polling often stays cheap for any N.
    """

    def __init__(self, fake: FakeDiscord, interactions: list[FakeInteraction], images_each: int) -> None:
        self.fake = fake
        self.images_each = images_each
        self.by_token = {interaction.token: interaction for interaction in interactions}
        self.files: dict[int, int] = {}
        self.delivered_at: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self._seen = len(fake.requests)
        self._in_progress: list[RecordedRequest] = []

    @property
    def settled(self) -> int:
        """Interactions delivered or failed."""
        return len(self.delivered_at) + len(self.failed)

    def poll(self) -> None:
        """Account for the requests that finished since the last call."""
        new = self.fake.requests[self._seen :]
        self._seen += len(new)
        waiting, self._in_progress = self._in_progress + new, []
        for record in waiting:
            if record.status is None:
                self._in_progress.append(record)
            else:
                self._account(record)

    def _account(self, record: RecordedRequest) -> None:
        if not record.path.startswith("/webhooks/") or record.status >= 300:
            return
        parts = record.path.split("/")  # "", "webhooks", application id, token, ...
        interaction = self.by_token.get(parts[3]) if len(parts) > 3 else None
        if interaction is None or interaction.id in self.delivered_at or interaction.id in self.failed:
            return
        if record.files:
            self.files[interaction.id] = self.files.get(interaction.id, 0) + len(record.files)
            if self.files[interaction.id] >= self.images_each:
                self.delivered_at[interaction.id] = record.time
            return
        content = record.json.get("content") if isinstance(record.json, dict) else None
        if isinstance(content, str) and FAILURE_MARK in content:
            self.failed[interaction.id] = content


@dataclass
class BotProcess:
    """``python -m bench.instrumented_bot``: the real bot with its measuring instruments."""

    env: dict[str, str]
    log_path: Path
    stats_path: Path
    process: asyncio.subprocess.Process | None = None
    cpus: set[int] | None = None

    async def start(self) -> None:
        """Start the process; its log goes to ``log_path``."""
        with self.log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.instrumented_bot",
                cwd=REPO,
                env=self.env,
                stdout=log_file,
                stderr=log_file,
            )
        if self.cpus:
            os.sched_setaffinity(self.process.pid, self.cpus)

    @property
    def pid(self) -> int:
        """The bot's process id."""
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        """Send a signal if the process still runs."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    async def stop(self) -> dict[str, Any]:
        """SIGTERM, then read the measurements the instruments write once ``bot.main()`` has returned.

        A bot that wrote them but is still alive EXIT_GRACE seconds later is stuck at interpreter exit (a
        non-daemon thread left running): it is killed and ``exit_hung`` is set in the result.
        """
        hung = False
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            written_at: float | None = None
            while self.process.returncode is None:
                now = time.monotonic()
                if written_at is None and self.stats_path.exists():
                    written_at = now
                if now > deadline or (written_at is not None and now - written_at > EXIT_GRACE):
                    hung = True
                    log.warning("the bot did not exit after SIGTERM; killing it")
                    self.process.kill()
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.process.wait(), 0.1)
            await self.process.wait()
        if not self.stats_path.exists():
            return {"exit_hung": hung}
        return json.loads(self.stats_path.read_text()) | {"exit_hung": hung}

    def log(self) -> str:
        """What the bot logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class BenchWorld:
    """One server with a channel and members, both fakes, and the bot connected to them."""

    discord: FakeDiscord
    onemin: TimedOneMin
    workdir: Path
    guild: FakeGuild = field(init=False)
    channel: FakeChannel = field(init=False)
    bot: BotProcess | None = None

    def __post_init__(self) -> None:
        self.guild = self.discord.add_guild(name="Bench Server")
        self.channel = self.discord.add_channel(self.guild, name="bench")

    def add_members(self, count: int, prefix: str) -> list[FakeMember]:
        """``count`` ordinary members named ``{prefix}{i}``."""
        return [self.discord.add_member(self.guild, username=f"{prefix}{i}") for i in range(count)]

    def bot_env(self, **settings: str) -> dict[str, str]:
        """The bot's environment: pointed at the fakes, a fresh SQLite file, and ``settings`` on top."""
        return bot_environment(
            self.discord,
            self.onemin,
            self.workdir / "bench.db",
            **{
                "DISCORD_GUILD_ID": str(self.guild.id),
                "BENCH_STATS_PATH": str(self.workdir / "bot-stats.json"),
                **settings,
            },
        )

    async def start_bot(self, env: dict[str, str], cpus: set[int] | None = None) -> BotProcess:
        """Start the instrumented bot and wait until it is connected and its commands are synced."""
        self.bot = BotProcess(env, self.workdir / "bot.log", Path(env["BENCH_STATS_PATH"]), cpus=cpus)
        await self.bot.start()
        try:
            await self.discord.wait_until_ready(timeout=60)
            await self.discord.wait_for_commands(timeout=60)
        except TimeoutError as error:
            raise RuntimeError(f"the bot did not come up:\n{self.bot.log()[-4000:]}") from error
        return self.bot

    async def imagine(self, member: FakeMember, options: dict[str, Any]) -> FakeInteraction:
        """``/imagine`` as ``member`` types it."""
        return await self.discord.invoke(member, self.channel, "imagine", options=options)

    async def wait_settled(self, tracker: DeliveryTracker, count: int, within: float) -> None:
        """Poll until ``count`` interactions are delivered or failed (TimeoutError after ``within`` s)."""
        deadline = time.monotonic() + within
        while True:
            tracker.poll()
            if tracker.settled >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {tracker.settled} of {count} settled within {within} s")
            await asyncio.sleep(0.01)


# -- one burst ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One /imagine to send: who, which of their jobs, and the prompt that identifies it at the generator."""

    member: FakeMember
    member_index: int
    job: int

    @property
    def prompt(self) -> str:
        """Unique per request, so the generator's log says whose job it was."""
        return f"bench {self.member_index}.{self.job}: {PROMPT}"


@dataclass
class Sample:
    """CPU seconds of the bot, of this process (the fakes) and of the whole machine at one moment; and how long the
    bot's event-loop thread has run on a core and waited for one (runnable, while something else had the cores)."""

    at: float
    bot_cpu: float
    bench_cpu: float
    machine_cpu: float
    loop_ran: float = math.nan
    loop_waited: float = math.nan

    @classmethod
    def take(cls, pid: int) -> Sample:
        """Read them now."""
        ran, waited = thread_schedule_seconds(pid)
        return cls(time.monotonic(), process_cpu_seconds(pid), own_cpu_seconds(), machine_cpu_seconds(), ran, waited)


@dataclass
class Run:
    """What happened in one burst, as seen from this process."""

    requests: list[Request]
    interactions: list[FakeInteraction]
    tracker: DeliveryTracker
    fired_at: float
    phases: dict[str, Sample] = field(default_factory=dict)
    memory_before: dict[str, int] = field(default_factory=dict)
    memory_after: dict[str, int] = field(default_factory=dict)
    generations: list[Generation] = field(default_factory=list)
    timed_out: bool = False
