"""The burst benchmark's report: figures from what the fakes recorded and what the bot measured inside itself,
checked against issue 5's targets, printed for people or saved as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import math
import os
import pstats
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from bench.instrumented_bot import token_key
from bench.measure import Summary, Timeline, percentile
from bench.world import FAIRNESS_BURST_JOBS, FAIRNESS_MEMBERS, Generation, Run, Sample

log = logging.getLogger(__name__)

# The targets of issue 5.
FIRST_RESPONSE_P99 = 0.500
CPU_PER_INTERACTION = 0.0005
RATIO_P50 = 1.05
RATIO_P99 = 1.15
STALL_MAX = 0.100
MEMORY_MAX_MB = 300
MIN_REQUESTS_FOR_CPU = 100


# -- analysis ---------------------------------------------------------------------------------------------------------


def analyse(run: Run, stats: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the report, as plain data (printed by ``print_report``, or saved with --json)."""
    done = run.phases["done"].at
    by_prompt = {generation.prompt: generation for generation in run.generations}
    report: dict[str, Any] = {
        "command": args.command,
        "scenario": scenario_name(args),
        "requests": len(run.requests),
        "delivered": len(run.tracker.delivered_at),
        "failed": len(run.tracker.failed),
        "timed_out": run.timed_out,
        "wall_seconds": done - run.fired_at,
        "first_response": first_response(run, stats),
        "end_to_end": end_to_end(run, stats, by_prompt, services_latency(args)),
        "event_loop": event_loop(stats, run.fired_at, done),
        "memory_mb": memory(run, stats),
        "cpu": cpu(run, stats),
        "discord_requests": rest_requests(stats, run.fired_at, done),
    }
    if args.fairness:
        report["fairness"] = fairness(run, by_prompt)
    report["targets"] = targets(report, args)
    return report


def services_latency(args: argparse.Namespace) -> float:
    """The least a job's end to end can be: the generator's latency plus the image download's time to first byte."""
    return float(args.latency + args.download_latency)


def scenario_name(args: argparse.Namespace) -> str:
    """One line saying what was run."""
    what = f"{args.count} x {args.size} {args.format}" + (f" {args.quality}" if args.quality else "")
    if args.fairness:
        who = f"fairness: 1 member x {FAIRNESS_BURST_JOBS} jobs, then {FAIRNESS_MEMBERS} members x 1"
    else:
        who = f"{args.members} members x 1 request"
    extra = f", oversize (upload limit {args.upload_limit} bytes, noisy images)" if args.oversize else ""
    latency = f"generator latency {args.latency:g} s"
    if args.download_latency:
        latency += f" + download latency {args.download_latency:g} s"
    extra += ", over TLS" if args.tls else ""
    return f"{who}, {what}, {latency}, MAX_CONCURRENT_JOBS={args.concurrency}{extra}{', pinned' if args.pin else ''}"


def first_response(run: Run, stats: dict[str, Any]) -> dict[str, Any]:
    """Interaction sent -> callback arrived (the fake's clock), and where that time went."""
    parsed = stats.get("interactions_parsed", {})
    sent = stats.get("callbacks_sent", {})
    total, gateway, in_bot, back = [], [], [], []
    kinds: Counter[int] = Counter()
    for interaction in run.interactions:
        if interaction.responded_at is None:
            continue
        total.append(interaction.responded_at - interaction.created_at)
        kinds[interaction.callbacks[0].get("type")] += 1
        key = str(interaction.id)
        if key in parsed and key in sent:
            gateway.append(parsed[key] - interaction.created_at)
            in_bot.append(sent[key] - parsed[key])
            back.append(interaction.responded_at - sent[key])
    return {
        "answered": len(total),
        "callback_types": dict(kinds),
        "total": Summary.of(total),
        "gateway": Summary.of(gateway),
        "in_bot": Summary.of(in_bot),
        "back": Summary.of(back),
    }


def end_to_end(run: Run, stats: dict[str, Any], by_prompt: dict[str, Generation], latency: float) -> dict[str, Any]:
    """Interaction sent -> all its images arrived on Discord; and the parts before and after the generator."""
    last_webhook_call: dict[str, float] = {}  # token key -> start of the bot's last webhook request (the delivery)
    for kind, key, began, _finished, _status in stats.get("requests", []):
        if key is not None and " webhook" in kind:
            last_webhook_call[key] = max(began, last_webhook_call.get(key, began))
    total, before, after, bot_side, upload = [], [], [], [], []
    burst_start = min((interaction.created_at for interaction in run.interactions), default=0.0)
    at_generator, at_discord = [], []
    for request, interaction in zip(run.requests, run.interactions, strict=True):
        delivered = run.tracker.delivered_at.get(interaction.id)
        if delivered is None:
            continue
        total.append(delivered - interaction.created_at)
        at_discord.append(delivered - burst_start)
        generation = by_prompt.get(request.prompt)
        if generation is None:
            continue
        before.append(generation.arrived - interaction.created_at)
        at_generator.append(generation.arrived - burst_start)
        after.append(delivered - generation.answered)
        upload_started = last_webhook_call.get(token_key(interaction.token))
        if upload_started is not None:
            bot_side.append(upload_started - generation.answered)
            upload.append(delivered - upload_started)
    result: dict[str, Any] = {
        "total": Summary.of(total),
        "to_generator": Summary.of(before),
        "after_generator": Summary.of(after),
        "after_in_bot": Summary.of(bot_side),
        "upload": Summary.of(upload),
        "timeline": {"at_generator": Timeline.of(at_generator), "at_discord": Timeline.of(at_discord)},
    }
    if latency > 0 and total:
        result["ratio_p50"] = percentile(total, 50) / latency
        result["ratio_p99"] = percentile(total, 99) / latency
    return result


def event_loop(stats: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """The bot's loop lag during the burst: the largest stall, how often it stalled, and where (sampled stacks)."""
    tick = stats.get("tick_seconds", 0.01)
    lags = [
        (began, lag)
        for began, lag in zip(stats.get("tick_at", []), stats.get("tick_lag", []), strict=True)
        if began + tick + lag >= start and began <= end
    ]
    if not lags:
        return {"ticks": 0}
    worst_at, worst = max(lags, key=lambda item: item[1])
    values = [lag for _, lag in lags]
    stacks = [s for s in stats.get("stall_stacks", []) if start <= s["at"] <= end + 1]
    common = Counter(tuple(s["stack"][-6:]) for s in stacks).most_common(3)
    return {
        "ticks": len(values),
        "max_stall": worst,
        "max_stall_at": worst_at - start,
        "lag": Summary.of(values),
        "stalls_over_50ms": sum(1 for v in values if v > 0.050),
        "stalls_over_100ms": sum(1 for v in values if v > 0.100),
        "sampled_stacks": len(stacks),
        "common_stacks": [{"samples": count, "stack": list(stack)} for stack, count in common],
        "collections": _collections(stats, start, end),
        "gateway_pacing": stats.get("gateway_pacing"),
    }


def _collections(stats: dict[str, Any], start: float, end: float) -> dict[int, dict[str, float]]:
    """Garbage collections in the burst, per generation: how many, their total and their longest time."""
    found: dict[int, dict[str, float]] = {}
    for generation, began, seconds in stats.get("collections", []):
        if start <= began <= end:
            entry = found.setdefault(generation, {"count": 0, "total": 0.0, "max": 0.0})
            entry["count"] += 1
            entry["total"] += seconds
            entry["max"] = max(entry["max"], seconds)
    return dict(sorted(found.items()))


def memory(run: Run, stats: dict[str, Any]) -> dict[str, float | None]:
    """The bot's resident memory before the burst, and its high-water mark (ever, i.e. including the burst)."""
    hwm = run.memory_after.get("VmHWM") or stats.get("vm_hwm_kib")
    return {
        "rss_before": _mb(run.memory_before.get("VmRSS")),
        "peak_before": _mb(run.memory_before.get("VmHWM")),
        "peak": _mb(hwm),
        "rss_after": _mb(run.memory_after.get("VmRSS")),
    }


def _mb(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def cpu(run: Run, stats: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds of the bot (every thread), of this process (the fakes) and of everything else on the machine
    (other people's test runs make the timings noisy), per phase of the burst."""
    phases = run.phases
    count = len(run.requests)
    fire, done = phases["fire"], phases["done"]
    result: dict[str, Any] = {
        "bot_total": done.bot_cpu - fire.bot_cpu,
        "bot_per_job_ms": (done.bot_cpu - fire.bot_cpu) / count * 1000,
        "fakes_total": done.bench_cpu - fire.bench_cpu,
        "others_total": (done.machine_cpu - fire.machine_cpu)
        - (done.bot_cpu - fire.bot_cpu)
        - (done.bench_cpu - fire.bench_cpu),
        "cpus": os.cpu_count(),
        "phase_ends": {name: sample.at - fire.at for name, sample in phases.items()},
    }
    # Until every interaction has its first response: the accept path (and whatever job starts slipped in).
    if "answered" in phases:
        answered = phases["answered"]
        result["answer_phase_seconds"] = answered.at - fire.at
        result["bot_answer_per_interaction_ms"] = (answered.bot_cpu - fire.bot_cpu) / count * 1000
    # Until every job is answered and at the generator: the accept path plus each job's start.
    accepted = max(
        (phases[name] for name in ("answered", "started") if name in phases), key=lambda s: s.at, default=None
    )
    if accepted is not None:
        result["accept_phase_seconds"] = accepted.at - fire.at
        result["bot_accept_per_interaction_ms"] = (accepted.bot_cpu - fire.bot_cpu) / count * 1000
        result["fakes_accept"] = accepted.bench_cpu - fire.bench_cpu
        result["loop_accept"] = loop_thread(fire, accepted)
    if "first_result" in phases:
        first = phases["first_result"]
        result["bot_after_first_result"] = done.bot_cpu - first.bot_cpu
        result["bot_delivery_per_job_ms"] = (done.bot_cpu - first.bot_cpu) / count * 1000
        result["fakes_after_first_result"] = done.bench_cpu - first.bench_cpu
        result["loop_delivery"] = loop_thread(first, done)
    result["bot_process_total"] = (stats.get("cpu_user") or 0) + (stats.get("cpu_system") or 0)
    return result


def loop_thread(start: Sample, end: Sample) -> dict[str, float]:
    """Between two samples: the seconds that passed, and how many of them the bot's event-loop thread ran on a core
    and waited for one while it had work (the machine's other processes, or the bot's own threads, had them).
    A loop that ran nearly all the time and waited little is bound by its own CPU."""
    return {
        "seconds": end.at - start.at,
        "ran": end.loop_ran - start.loop_ran,
        "waited": end.loop_waited - start.loop_waited,
    }


def rest_requests(stats: dict[str, Any], start: float, end: float) -> dict[str, dict[str, Any]]:
    """The bot's Discord requests in the burst by kind: how many, and how long each took as the bot saw it."""
    durations: defaultdict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    for kind, _key, began, finished, status in stats.get("requests", []):
        if start <= began <= end:
            durations[kind].append(finished - began)
            if status < 0 or status >= 400:
                errors[kind] += 1
    return {
        kind: {"count": len(values), "errors": errors[kind], "duration": Summary.of(values)}
        for kind, values in sorted(durations.items(), key=lambda item: -len(item[1]))
    }


def fairness(run: Run, by_prompt: dict[str, Generation]) -> dict[str, Any]:
    """Where the hundred members' jobs started relative to the one member's ten (generator arrival order)."""
    started = sorted(
        ((by_prompt[r.prompt].arrived, r) for r in run.requests if r.prompt in by_prompt), key=lambda item: item[0]
    )
    heavy_ranks = [rank for rank, (_, r) in enumerate(started, 1) if r.member_index == 0]
    others = [(rank, at) for rank, (at, r) in enumerate(started, 1) if r.member_index != 0]
    heavy_times = [at - run.fired_at for at, r in started if r.member_index == 0]
    if not others or len(heavy_ranks) < FAIRNESS_BURST_JOBS:
        return {"complete": False, "heavy_ranks": heavy_ranks, "others_started": len(others)}
    last_other_rank = others[-1][0]
    heavy_before_last = sum(1 for rank in heavy_ranks if rank < last_other_rank)
    waits = [at - run.fired_at for _, at in others]
    return {
        "complete": len(others) == FAIRNESS_MEMBERS,
        "heavy_ranks": heavy_ranks,
        "heavy_start_seconds": heavy_times,
        "others_last_rank": last_other_rank,
        "others_start": Summary.of(waits),
        "heavy_jobs_before_last_other": heavy_before_last,
        "all_others_before_heavy_tenth": last_other_rank < heavy_ranks[-1],
    }


def targets(report: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, bool | None, str]]:
    """(target, met? None = not measured in this scenario, figure)."""
    checks: list[tuple[str, bool | None, str]] = []
    complete = not report["timed_out"] and report["delivered"] == report["requests"]
    checks.append(("every request delivered", complete, f"{report['delivered']}/{report['requests']}"))
    first = report["first_response"]["total"]
    checks.append(("first response p99 < 500 ms", first.p99 < FIRST_RESPONSE_P99, f"{first.p99 * 1000:.0f} ms"))
    per_interaction = report["cpu"].get("bot_answer_per_interaction_ms")
    if per_interaction is not None:
        # /proc counts CPU in 10 ms ticks: a few interactions' worth is below its resolution.
        measurable = report["requests"] >= MIN_REQUESTS_FOR_CPU
        checks.append(
            (
                "bot CPU < 0.5 ms per interaction (until all were answered)",
                per_interaction < CPU_PER_INTERACTION * 1000 if measurable else None,
                f"{per_interaction:.2f} ms" + ("" if measurable else f" (needs >= {MIN_REQUESTS_FOR_CPU} requests)"),
            )
        )
    e2e = report["end_to_end"]
    # The issue sets these for every job in flight at once and images posted as they are; with a queue or
    # re-encoding, end to end is meant to be longer (the figures are still printed above).
    if "ratio_p50" in e2e and not args.fairness and not args.oversize and args.concurrency >= args.members:
        checks.append(("end-to-end / latency p50 <= 1.05", e2e["ratio_p50"] <= RATIO_P50, f"{e2e['ratio_p50']:.3f}"))
        checks.append(("end-to-end / latency p99 <= 1.15", e2e["ratio_p99"] <= RATIO_P99, f"{e2e['ratio_p99']:.3f}"))
    stall = report["event_loop"].get("max_stall")
    if stall is not None:
        checks.append(("largest event-loop stall < 100 ms", stall < STALL_MAX, f"{stall * 1000:.0f} ms"))
    peak = report["memory_mb"]["peak"]
    if peak is not None:
        checks.append(("bot peak memory < 300 MB", peak < MEMORY_MAX_MB, f"{peak:.0f} MB"))
    if args.fairness:
        fair = report["fairness"]
        met = fair.get("complete") and fair.get("all_others_before_heavy_tenth")
        figure = (
            f"last of the {FAIRNESS_MEMBERS} started #{fair.get('others_last_rank')}, "
            f"the heavy member's jobs #{fair.get('heavy_ranks')}"
        )
        checks.append((f"the {FAIRNESS_MEMBERS} members' jobs are not behind the heavy member's ten", met, figure))
    return checks


# -- output -----------------------------------------------------------------------------------------------------------


def say_loop_thread(say: Callable[[str], None], loop: dict[str, float]) -> None:
    """``    the loop thread: on a core 0.38 s of 0.48 s, waiting for one 0.01 s`` (nothing where not measured)."""
    if math.isnan(loop["ran"]):
        return
    say(
        f"    the bot's loop thread: on a core {loop['ran']:.2f} s of {loop['seconds']:.2f} s, "
        f"waiting for one {loop['waited']:.3f} s"
    )


def print_report(report: dict[str, Any], args: argparse.Namespace, out: Any = None) -> None:
    """The human-readable report (to stdout unless ``out`` is given)."""

    def say(text: str = "") -> None:
        print(text, file=out or sys.stdout)

    say(f"scenario: {report['scenario']}")
    say(f"command:  {report['command']}")
    timed_out = "  (TIMED OUT)" if report["timed_out"] else ""
    say(
        f"settled:  {report['delivered']} delivered, {report['failed']} failed, of {report['requests']} "
        f"in {report['wall_seconds']:.2f} s{timed_out}"
    )
    first = report["first_response"]
    say()
    say(
        f"first response (interaction sent -> callback at the fake): {first['answered']} answered, "
        f"callback types {first['callback_types']}"
    )
    say(f"  total           {first['total'].ms()}")
    say(f"  gateway         {first['gateway'].ms()}   (fake sent -> bot parsed INTERACTION_CREATE)")
    say(f"  in the bot      {first['in_bot'].ms()}   (parsed -> callback request started)")
    say(f"  back            {first['back'].ms()}   (callback started -> the fake handled it)")
    e2e = report["end_to_end"]
    say()
    ratio = ""
    if "ratio_p50" in e2e:
        ratio = f"; / latency: p50 {e2e['ratio_p50']:.3f}, p99 {e2e['ratio_p99']:.3f}"
    say(f"end to end (interaction sent -> all its images at Discord): {e2e['total'].s()}{ratio}")
    say(f"  to the generator     {e2e['to_generator'].ms()}")
    say(f"  after the generator  {e2e['after_generator'].ms()}   (answer ready -> last upload arrived)")
    say(f"    in the bot         {e2e['after_in_bot'].ms()}   (answer ready -> upload request started)")
    say(f"    upload             {e2e['upload'].ms()}   (upload started -> the fake began handling it)")
    timeline = e2e["timeline"]
    say("  when, from the burst's start (jobs in the order they got there):")
    say(f"    at the generator   {timeline['at_generator'].ms()}")
    say(f"    images at Discord  {timeline['at_discord'].ms()}")
    loop = report["event_loop"]
    say()
    if loop.get("ticks"):
        say(
            f"bot event loop: largest stall {loop['max_stall'] * 1000:.1f} ms at +{loop['max_stall_at']:.2f} s; "
            f"lag {loop['lag'].ms()}; ticks late > 50 ms: {loop['stalls_over_50ms']}, > 100 ms: "
            f"{loop['stalls_over_100ms']} (of {loop['ticks']})"
        )
        if loop.get("collections"):
            parts = [
                f"gen{generation} x{entry['count']:.0f} {entry['total'] * 1000:.1f} ms "
                f"(longest {entry['max'] * 1000:.1f})"
                for generation, entry in loop["collections"].items()
            ]
            say("  garbage collections: " + ", ".join(parts))
        if loop.get("gateway_pacing"):
            pacing = loop["gateway_pacing"]
            say(
                f"  gateway reader (cogs/pacing.py, the whole run): waited {pacing['holds']} times for the bot to "
                f"answer, stopped waiting for a while {pacing['rests']} times"
            )
        for common in loop["common_stacks"]:
            say(f"  stalled in ({common['samples']} samples): " + " <- ".join(reversed(common["stack"][-4:])))
    mem = report["memory_mb"]
    say(
        f"bot memory: peak (VmHWM) {_fmt_mb(mem['peak'])}; before the burst RSS {_fmt_mb(mem['rss_before'])} "
        f"(peak so far {_fmt_mb(mem['peak_before'])}); after RSS {_fmt_mb(mem['rss_after'])}"
    )
    c = report["cpu"]
    say(f"bot CPU: {c['bot_total']:.2f} s in the burst = {c['bot_per_job_ms']:.2f} ms per job")
    if "bot_answer_per_interaction_ms" in c:
        say(
            f"  until all were answered ({c['answer_phase_seconds']:.2f} s): "
            f"{c['bot_answer_per_interaction_ms']:.2f} ms per interaction"
        )
    if "bot_accept_per_interaction_ms" in c:
        say(
            f"  accept phase ({c['accept_phase_seconds']:.2f} s: all answered and at the generator): "
            f"{c['bot_accept_per_interaction_ms']:.2f} ms per interaction"
        )
    if "loop_accept" in c:
        say_loop_thread(say, c["loop_accept"])
    if "bot_delivery_per_job_ms" in c:
        say(f"  from the first result to the end: {c['bot_delivery_per_job_ms']:.2f} ms per job")
    if "loop_delivery" in c:
        say_loop_thread(say, c["loop_delivery"])
    say(
        f"fakes (this process) CPU: {c['fakes_total']:.2f} s in the burst"
        + (f", {c['fakes_accept']:.2f} s of it in the accept phase" if "fakes_accept" in c else "")
    )
    wall = report["wall_seconds"]
    others = max(0.0, c["others_total"])  # per-process and per-CPU accounting differ by a few ticks
    say(
        f"everything else on the machine: {others:.2f} CPU-s in the burst "
        f"({others / wall:.2f} of {c['cpus']} cores on average; above ~0.2 the timings are disturbed)"
    )
    say("bot's Discord requests in the burst (round trip as the bot saw it, the fake's time included):")
    for kind, data in report["discord_requests"].items():
        errors = f", {data['errors']} errors" if data["errors"] else ""
        say(f"  {kind:<28} {data['count']:>5}{errors}  {data['duration'].ms()}")
    if "fairness" in report:
        fair = report["fairness"]
        say()
        say(f"fairness (order of arrival at the generator, 1 = first; {FAIRNESS_BURST_JOBS + FAIRNESS_MEMBERS} jobs):")
        say(f"  heavy member's jobs started #{fair.get('heavy_ranks')}")
        if "heavy_start_seconds" in fair:
            times = ", ".join(f"{t:.1f}" for t in fair["heavy_start_seconds"])
            say(f"    at +[{times}] s")
            say(
                f"  the {FAIRNESS_MEMBERS} members' jobs: last started #{fair['others_last_rank']}; start "
                f"{fair['others_start'].s()} after the burst"
            )
            say(f"  heavy member's jobs that started before the last of them: {fair['heavy_jobs_before_last_other']}")
    spec = report.get("spec_checked")
    if spec:
        say(
            f"fake Discord checked {spec['checked']} of {spec['bodies']} request bodies against Discord's OpenAPI "
            f"description (one in {spec['one_in']} per route of the burst, after it; the warm-up's as they came)"
        )
    fake = report["fake_discord"]
    if fake["protocol_errors"] or fake["spec_violations"] or report["generator_rejected"]:
        say()
        say(
            f"fake Discord: {len(fake['protocol_errors'])} protocol errors, {len(fake['spec_violations'])} spec "
            f"violations; generator refused {len(report['generator_rejected'])}"
        )
        for line in (fake["protocol_errors"] + fake["spec_violations"] + report["generator_rejected"])[:5]:
            say(f"  {line}")
    if report["bot_log_problems"]:
        say()
        say("bot log errors:")
        for line in report["bot_log_problems"][:5]:
            say(f"  {line}")
    if report.get("bot_exit_hung"):
        say()
        say("bot: did NOT exit after SIGTERM (bot.main() returned, then a non-daemon thread kept it alive): killed")
    say()
    say("targets:")
    for name, met, figure in report["targets"]:
        mark = "n/a " if met is None else ("PASS" if met else "FAIL")
        say(f"  [{mark}] {name}: {figure}")
    if args.cprofile and args.cprofile.exists():
        say()
        say(
            f"cProfile of the bot's loop thread ({args.profile_phase} of the burst) in {args.cprofile}, "
            "top 25 by own time:"
        )
        buffer = io.StringIO()
        stats = pstats.Stats(str(args.cprofile), stream=buffer)
        stats.sort_stats("tottime").print_stats(25)
        say(buffer.getvalue().split("\n", 6)[-1].rstrip())
    if args.py_spy:
        say(f"py-spy profile: {args.py_spy}")
    if report.get("workdir"):
        say(f"bot log and database kept in {report['workdir']}")


def _fmt_mb(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} MB"


def to_json(value: Any) -> Any:
    """The report as JSON-ready data."""
    if isinstance(value, Summary):
        return {"count": value.count, "p50": value.p50, "p99": value.p99, "max": value.max}
    if isinstance(value, Timeline):
        return to_json({**dataclasses.asdict(value), "spacing": value.spacing})
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
