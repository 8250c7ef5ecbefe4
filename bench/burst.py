"""Burst benchmark (issue 5): N members press /imagine at the same moment. How fast does the bot answer, how close
to the generator's own latency are the images delivered, and what does the bot spend doing it?

Run from the repo root (a fresh clone needs only ``pip install -e '.[test]'``)::

    .venv/bin/python -m bench.burst --members 500 --latency 5 --size 1536x1024 --format png
    .venv/bin/python -m bench.burst --members 100 --latency 2 --oversize       # every image re-encoded
    .venv/bin/python -m bench.burst --fairness --latency 2                      # 100 members + one with 10 jobs

Both fakes (tests/fakes) run in this process; the bot runs as ``python -m bench.instrumented_bot`` (``bot.main()``
with a loop-lag monitor and discord.py hooks) on a fresh SQLite file in a temporary folder. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from bench.measure import process_memory_kib
from bench.report import analyse, print_report, to_json
from bench.tls import make_certificate, server_context
from bench.world import (
    FAIRNESS_BURST_JOBS,
    FAIRNESS_MEMBERS,
    PROMPT,
    BenchWorld,
    BotProcess,
    DeliveryTracker,
    Request,
    Run,
    Sample,
    TimedOneMin,
)
from bot import event_loop_factory
from tests.botenv import API_KEY, BOT_TOKEN
from tests.fakes.discord import FakeDiscord, FakeMember
from tests.fakes.onemin import render_image, size_error

log = logging.getLogger(__name__)

QUOTA_CREDITS = "1000000"
FAIRNESS_CONCURRENCY = 16
DEFAULT_OVERSIZE_LIMIT = 1024 * 1024


# -- the plan -------------------------------------------------------------------------------------------------------


def imagine_options(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    """The /imagine options every request of the run uses."""
    options: dict[str, Any] = {"prompt": prompt, "size": args.size, "format": args.format, "count": args.count}
    if args.quality:
        options["quality"] = args.quality
    return options


# -- running ----------------------------------------------------------------------------------------------------------


class PySpy:
    """``py-spy record`` attached to the bot for the burst only (output format from the file's suffix)."""

    FORMATS: ClassVar[dict[str, str]] = {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}

    def __init__(self, binary: str, output: Path, pid: int, *, gil_only: bool = False, rate: int = 250) -> None:
        self.binary = binary
        self.rate = rate
        self.output = output
        self.pid = pid
        self.gil_only = gil_only
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Attach (sampling ``rate`` times a second, without pausing the bot) and give it a moment to start."""
        fmt = self.FORMATS.get(self.output.suffix, "flamegraph")
        command = [self.binary, "record", "--pid", str(self.pid), "-o", str(self.output), "-f", fmt]
        command += ["-r", str(self.rate), "--nonblocking", "--threads"] + (["--gil"] if self.gil_only else [])
        self.process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        await asyncio.sleep(1.0)
        if self.process.returncode is not None:
            assert self.process.stderr is not None
            error = (await self.process.stderr.read()).decode(errors="replace").strip()
            raise RuntimeError(f"py-spy could not attach to the bot: {error}")

    async def stop(self) -> None:
        """Ctrl+C: py-spy writes its output and exits."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.process.communicate(), 60)
        except TimeoutError:
            self.process.kill()


class Profilers:
    """cProfile inside the bot (SIGUSR1 / SIGUSR2) and py-spy outside it, started and stopped together, once."""

    def __init__(self, bot: BotProcess, spy: PySpy | None, *, cprofile: bool) -> None:
        self.bot = bot
        self.spy = spy
        self.cprofile = cprofile
        self.state = "idle"

    async def start(self) -> None:
        """Start profiling (no-op if nothing was asked for, or already started)."""
        if self.state != "idle" or not (self.cprofile or self.spy):
            return
        self.state = "running"
        if self.spy is not None:
            await self.spy.start()
        if self.cprofile:
            self.bot.signal(signal.SIGUSR1)
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        """Stop profiling (no-op unless running)."""
        if self.state != "running":
            return
        self.state = "stopped"
        if self.cprofile:
            self.bot.signal(signal.SIGUSR2)
        if self.spy is not None:
            await self.spy.stop()


async def warm_up(world: BenchWorld, args: argparse.Namespace, member: FakeMember) -> None:
    """One request end to end with no generator latency: first-use costs (the fake's spec validators, the fake
    generator's image cache, the bot's first queries) stay out of the measurement, as in a bot that has been up."""
    latency, world.onemin.latency = world.onemin.latency, 0.0
    interaction = await world.imagine(member, imagine_options(args, f"warm-up: {PROMPT}"))
    tracker = DeliveryTracker(world.discord, [interaction], args.count)
    try:
        await world.wait_settled(tracker, 1, within=60)
    finally:
        world.onemin.latency = latency
    if tracker.failed:
        raise RuntimeError(f"the warm-up request failed: {next(iter(tracker.failed.values()))}")


@contextlib.contextmanager
def fakes_collector_paused() -> Iterator[None]:
    """No garbage collection in this process (the fakes) during the burst: they stand for services on other
    machines, whose pauses are not the bot's. Measured: ~100 collections in a 500-member burst, ~80 ms in all,
    one of them a 57 ms full collection (this process holds ~80k objects before the burst, the fake Discord's
    OpenAPI description among them).
    What is here before the burst is frozen (never looked at again); what the burst creates waits until after."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def burst(world: BenchWorld, bot: BotProcess, plan: list[Request], args: argparse.Namespace) -> Run:
    """Send every request of the plan at once and follow them until all are delivered (or the timeout)."""
    world.onemin.generations.clear()
    world.onemin.arrived = 0
    run_memory = process_memory_kib(bot.pid)
    spy = (
        PySpy(args.py_spy_bin, args.py_spy, bot.pid, gil_only=args.py_spy_gil, rate=args.py_spy_rate)
        if args.py_spy
        else None
    )
    profiler = Profilers(bot, spy, cprofile=bool(args.cprofile))
    if args.profile_phase != "delivery":
        await profiler.start()

    start = Sample.take(bot.pid)
    interactions = list(await asyncio.gather(*(world.imagine(r.member, imagine_options(args, r.prompt)) for r in plan)))
    run = Run(plan, interactions, DeliveryTracker(world.discord, interactions, args.count), start.at)
    run.memory_before = run_memory
    run.phases["fire"] = start
    unanswered = set(interactions)
    deadline = start.at + args.timeout
    while run.tracker.settled < len(plan):
        run.tracker.poll()
        now = time.monotonic()
        unanswered = {i for i in unanswered if i.responded_at is None}
        if "answered" not in run.phases and not unanswered:
            run.phases["answered"] = Sample.take(bot.pid)
        if "started" not in run.phases and world.onemin.arrived >= len(plan):
            run.phases["started"] = Sample.take(bot.pid)
            if args.profile_phase == "delivery":
                await profiler.start()  # the bot idles until the first result: time enough to attach
        if "first_result" not in run.phases and world.onemin.generations:
            run.phases["first_result"] = Sample.take(bot.pid)
        if args.profile_phase == "answer" and "answered" in run.phases:
            await profiler.stop()
        if args.profile_phase == "accept" and {"answered", "started"} <= run.phases.keys():
            await profiler.stop()
        if now > deadline:
            run.timed_out = True
            break
        await asyncio.sleep(0.01)
    run.phases["done"] = Sample.take(bot.pid)
    run.memory_after = process_memory_kib(bot.pid)
    await profiler.stop()
    run.generations = list(world.onemin.generations)
    return run


def build_plan(world: BenchWorld, args: argparse.Namespace) -> list[Request]:
    """Burst: one request from each of N members. Fairness: the one member's ten first, then the hundred."""
    if not args.fairness:
        return [Request(member, index, 0) for index, member in enumerate(world.add_members(args.members, "member"))]
    heavy = world.add_members(1, "heavy")[0]
    others = world.add_members(FAIRNESS_MEMBERS, "member")
    plan = [Request(heavy, 0, job) for job in range(FAIRNESS_BURST_JOBS)]
    return plan + [Request(member, index + 1, 0) for index, member in enumerate(others)]


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Set up the world, start the bot, warm up, burst, stop the bot, and return the report."""
    workdir = Path(tempfile.mkdtemp(prefix="imaginebot-bench-"))
    cpus = pin_processes() if args.pin else None
    certificate: Path | None = None
    tls: ssl.SSLContext | None = None
    if args.tls:
        certificate, key = make_certificate(workdir)
        tls = server_context(certificate, key)
    async with (
        FakeDiscord(token=BOT_TOKEN, ssl_context=tls) as discord,
        TimedOneMin(api_key=API_KEY, ssl_context=tls) as onemin,
    ):
        world = BenchWorld(discord, onemin, workdir)
        if args.oversize:
            onemin.noisy = True
            world.guild.attachment_size_limit = args.upload_limit
        warm_member = world.add_members(1, "warmup")[0]
        plan = build_plan(world, args)
        env = world.bot_env(
            QUOTA_DEFAULT_CREDITS=QUOTA_CREDITS,
            MAX_CONCURRENT_JOBS=str(args.concurrency),
            LOG_LEVEL=args.bot_log_level,
        )
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        if certificate is not None:
            env["SSL_CERT_FILE"] = str(certificate)  # the bot trusts the fakes' certificate, and nothing else
        if args.cprofile:
            env["BENCH_CPROFILE_PATH"] = str(args.cprofile.resolve())
        bot = await world.start_bot(env, cpus=cpus)
        stats: dict[str, Any] = {}
        try:
            await warm_up(world, args, warm_member)  # every body of the warm-up is checked against the spec
            # The burst's bodies are checked after it, so that the checks cost the fake no CPU during it.
            discord.validate_one_in = args.validate_one_in
            discord.validate_later = True
            onemin.latency = args.latency
            onemin.download_latency = args.download_latency
            with fakes_collector_paused():
                run = await burst(world, bot, plan, args)
        finally:
            stats = await bot.stop()
            discord.validate_deferred()
        report = analyse(run, stats, args)
        report["fake_discord"] = {
            "protocol_errors": list(discord.protocol_errors),
            "spec_violations": list(discord.spec_violations),
        }
        report["spec_checked"] = {
            "checked": discord.bodies_validated,
            "bodies": sum(discord.bodies_seen.values()),
            "one_in": args.validate_one_in,
        }
        report["generator_rejected"] = list(onemin.rejected)
        report["bot_log_problems"] = [
            line for line in bot.log().splitlines() if " ERROR " in line or "Traceback" in line
        ][:20]
        report["bot_exit_hung"] = bool(stats.get("exit_hung"))
        report["workdir"] = str(workdir)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        report["workdir"] = None
    return report


def pin_processes() -> set[int] | None:
    """This process (both fakes) on the first CPU, the bot on the others, so neither steals the other's core."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        log.warning("--pin needs at least 2 CPUs; running unpinned")
        return None
    os.sched_setaffinity(0, {available[0]})
    return set(available[1:])


# -- command line -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.burst",
        description="Burst benchmark: N members run /imagine at once against the fakes; the real bot in its process.",
    )
    parser.add_argument("--members", type=int, default=500, help="members, one /imagine each (default 500)")
    parser.add_argument("--latency", type=float, default=5.0, help="the fake generator's seconds per request")
    parser.add_argument(
        "--download-latency",
        type=float,
        default=0.0,
        help="seconds before each image download's answer starts, like S3's time to first byte (default 0)",
    )
    parser.add_argument("--size", default="1536x1024", help="image size WxH (default 1536x1024)")
    parser.add_argument("--format", choices=("png", "jpeg", "webp"), default="png")
    parser.add_argument("--quality", choices=("low", "medium", "high"), default=None, help="default: the bot's")
    parser.add_argument("--count", type=int, default=1, help="images per request, 1-10")
    parser.add_argument("--concurrency", type=int, default=None, help="MAX_CONCURRENT_JOBS (default: N; 16 fairness)")
    parser.add_argument(
        "--oversize",
        action="store_true",
        help="incompressible images over the server's upload limit, so that every one is re-encoded",
    )
    parser.add_argument(
        "--upload-limit",
        type=int,
        default=DEFAULT_OVERSIZE_LIMIT,
        help="the server's attachment_size_limit in bytes with --oversize (default 1 MiB)",
    )
    parser.add_argument(
        "--fairness",
        action="store_true",
        help=f"{FAIRNESS_MEMBERS} members x 1 job + 1 member x {FAIRNESS_BURST_JOBS}, MAX_CONCURRENT_JOBS=16",
    )
    parser.add_argument("--timeout", type=float, default=150.0, help="give up waiting after this many seconds")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="the fakes serve HTTPS and WSS (a throw-away certificate): each new connection costs a handshake",
    )
    parser.add_argument("--pin", action="store_true", help="pin the fakes to one CPU and the bot to the others")
    parser.add_argument("--cprofile", type=Path, help="cProfile the bot's loop thread during the burst into FILE")
    parser.add_argument("--py-spy", type=Path, help="py-spy record the bot during the burst (FILE .svg, .txt or .json)")
    parser.add_argument(
        "--profile-phase",
        choices=("all", "answer", "accept", "delivery"),
        default="all",
        help="profile the whole burst; or until every interaction is answered (answer), or also at the generator "
        "(accept); or from then to the end (delivery)",
    )
    parser.add_argument(
        "--py-spy-gil",
        action="store_true",
        help="sample only the thread holding the GIL (where the CPU goes, without time spent waiting for the GIL)",
    )
    parser.add_argument(
        "--validate-one-in",
        type=int,
        default=1,
        help="the fake Discord checks one request body of the burst in N per route against Discord's OpenAPI "
        "description, after the burst (default 1: all; about 2 ms each)",
    )
    parser.add_argument("--py-spy-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--py-spy-bin", default=shutil.which("py-spy") or "py-spy", help="the py-spy executable")
    parser.add_argument("--bot-log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--json", type=Path, help="also write the report as JSON to FILE")
    parser.add_argument(
        "--database-url",
        help="the bot's DATABASE_URL (default: a fresh SQLite file); an empty PostgreSQL database, e.g. "
        "postgresql://user:pass@host/db?search_path=bench (asyncpg takes unknown parameters as server settings)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bot's log and database (path printed)")
    args = parser.parse_args(argv)
    args.command = " ".join(["python -m bench.burst", *(sys.argv[1:] if argv is None else argv)])
    if args.concurrency is None:
        args.concurrency = FAIRNESS_CONCURRENCY if args.fairness else max(1, args.members)
    problem = size_error(args.size)
    if problem:
        parser.error(problem)
    if not 1 <= args.count <= 10:
        parser.error("--count must be 1..10")
    if args.members < 1:
        parser.error("--members must be at least 1")
    if args.oversize:
        width, height = (int(side) for side in args.size.split("x"))
        size = len(render_image(width, height, args.format, 0, True, None))
        if size <= args.upload_limit:
            parser.error(f"--oversize: a noisy {args.size} {args.format} is {size} bytes, not over {args.upload_limit}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its report; exit 1 when a target is missed, 2 when it could not run."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # The fakes on the bot's event loop too (uvloop where installed): they stand for services on other
        # machines, so the less of the machine they take, the less they disturb what is measured.
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            report = runner.run(run_benchmark(args))
    except (RuntimeError, TimeoutError) as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        return 2
    print_report(report, args)
    if args.json:
        args.json.write_text(json.dumps(to_json(report), indent=2))
    missed = [name for name, met, _ in report["targets"] if met is False]
    return 1 if missed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
