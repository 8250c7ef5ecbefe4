"""Small measuring tools for the benchmark: percentiles, and a process's CPU time and memory from /proc."""

from __future__ import annotations

import logging
import math
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def nearest_rank(count: int, percent: float) -> int:
    """The 1-based rank of the ``percent`` percentile among ``count`` sorted values (p99 of 500: 495)."""
    return max(1, math.ceil(percent / 100 * count))


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile (p99 of 500 values is the 495th smallest); NaN for no values."""
    if not values:
        return math.nan
    return sorted(values)[nearest_rank(len(values), percent) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """p50 / p99 / max of a set of durations, in seconds."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise ``values`` (seconds)."""
        return cls(len(values), percentile(values, 50), percentile(values, 99), max(values, default=math.nan))

    def ms(self) -> str:
        """``p50 12.3 ms, p99 45.6 ms, max 78.9 ms``."""
        return f"p50 {self.p50 * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms, max {self.max * 1000:.1f} ms"

    def s(self) -> str:
        """``p50 5.12 s, p99 5.34 s, max 5.40 s``."""
        return f"p50 {self.p50:.2f} s, p99 {self.p99:.2f} s, max {self.max:.2f} s"


@dataclass(frozen=True, slots=True)
class Timeline:
    """When a burst's jobs reached one point (at the generator, at Discord), in seconds from the burst's start,
    taken in the order they got there: the first, the one a quarter of the way, the median and the last one."""

    count: int
    first: float
    quarter: float
    median: float
    last: float

    @classmethod
    def of(cls, moments: Sequence[float]) -> Timeline:
        """The timeline of ``moments`` (seconds from the burst's start, any order)."""
        ordered = sorted(moments)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(len(ordered), ordered[0], percentile(ordered, 25), percentile(ordered, 50), ordered[-1])

    @property
    def spacing(self) -> float:
        """How far apart the jobs got there, on average, from the quarter to the median one: the pace once under
        way (NaN when fewer than 4 jobs leave no gap between the two). When the bot is the slowest part of the way
        there, this is its time per job."""
        steps = nearest_rank(self.count, 50) - nearest_rank(self.count, 25)
        return (self.median - self.quarter) / steps if steps > 0 else math.nan

    def ms(self) -> str:
        """``first 21 ms, quarter 113 ms, median 188 ms, last 300 ms (0.60 ms apart)``."""
        return (
            f"first {self.first * 1000:.0f} ms, quarter {self.quarter * 1000:.0f} ms, "
            f"median {self.median * 1000:.0f} ms, last {self.last * 1000:.0f} ms "
            f"({self.spacing * 1000:.2f} ms apart)"
        )


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads together (/proc/PID/stat, 10 ms resolution)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    fields = text.rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / _CLOCK_TICKS


def thread_schedule_seconds(pid: int, tid: int | None = None) -> tuple[float, float]:
    """Seconds one thread of a process (its main thread by default) has run on a core, and has waited for one while
    runnable (/proc/PID/task/TID/schedstat, in nanoseconds); NaN for both where the kernel does not say."""
    try:
        ran, waited, _slices = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return math.nan, math.nan
    return int(ran) / 1e9, int(waited) / 1e9


def process_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (high-water mark) of a process, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def machine_cpu_seconds() -> float:
    """CPU seconds every process of the machine has used since boot, all cores together (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is work.
    busy = sum(int(value) for index, value in enumerate(fields[1:9]) if index not in (3, 4))
    return busy / _CLOCK_TICKS


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
