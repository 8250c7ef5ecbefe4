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


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile (p99 of 500 values is the 495th smallest); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads together (/proc/PID/stat, 10 ms resolution)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    fields = text.rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / _CLOCK_TICKS


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
