"""Compare two versions of the bot with the burst benchmark: alternate runs, then medians.

One run's figures move by a few percent from the next on a shared machine (the end-to-end ratio by about
±0.005), so a single run of each version says little. This runs ``bench.burst`` with the same arguments in
two git revisions, A B A B ..., and prints every run and the median of each figure:

    .venv/bin/python -m bench.compare HEAD~1 HEAD --runs 4 -- --members 500 --latency 5

A revision is anything ``git worktree add`` takes (a commit, a branch), or ``.`` for the working tree as it
is, uncommitted changes included. Other revisions are checked out in temporary worktrees, removed at the end.
Every run uses this Python (the same installed packages).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.botenv import REPO

# (label, how to read it from a --json report, format)
FIGURES: tuple[tuple[str, Callable[[dict[str, Any]], float], str], ...] = (
    ("first response p99 ms", lambda r: r["first_response"]["total"]["p99"] * 1000, "{:.0f}"),
    ("end-to-end / latency p50", lambda r: r["end_to_end"]["ratio_p50"], "{:.3f}"),
    ("end-to-end / latency p99", lambda r: r["end_to_end"]["ratio_p99"], "{:.3f}"),
    ("to the generator p50 ms", lambda r: r["end_to_end"]["to_generator"]["p50"] * 1000, "{:.0f}"),
    ("after the generator p50 ms", lambda r: r["end_to_end"]["after_generator"]["p50"] * 1000, "{:.0f}"),
    (
        "images at Discord ms apart",
        lambda r: r["end_to_end"]["timeline"]["at_discord"]["spacing"] * 1000,
        "{:.2f}",
    ),
    ("largest stall ms", lambda r: r["event_loop"]["max_stall"] * 1000, "{:.0f}"),
    ("bot CPU per job ms", lambda r: r["cpu"]["bot_per_job_ms"], "{:.2f}"),
)


def read_figures(report: dict[str, Any]) -> dict[str, float | None]:
    """The compared figures of one ``bench.burst --json`` report (None where the run did not measure one)."""
    figures: dict[str, float | None] = {}
    for label, read, _ in FIGURES:
        try:
            figures[label] = float(read(report))
        except (KeyError, TypeError):
            figures[label] = None
    return figures


def medians(runs: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Each figure's median over the runs that measured it."""
    result: dict[str, float | None] = {}
    for label, _, _ in FIGURES:
        values = [run[label] for run in runs if run.get(label) is not None]
        result[label] = statistics.median(values) if values else None  # type: ignore[type-var]
    return result


def checkout(revision: str, into: Path) -> Path:
    """The folder to run ``revision`` in: the repository itself for ``.``, else a new worktree."""
    if revision == ".":
        return REPO
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), revision], check=True)
    return into


def run_once(folder: Path, burst_args: Sequence[str], report: Path) -> dict[str, float | None]:
    """One ``bench.burst`` run in ``folder``; its figures."""
    command = [sys.executable, "-m", "bench.burst", *burst_args, "--json", str(report)]
    finished = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if not report.exists():
        raise RuntimeError(f"bench.burst failed in {folder}:\n{finished.stdout}\n{finished.stderr}")
    figures = read_figures(json.loads(report.read_text()))
    report.unlink()
    return figures


def show(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="first revision (or . for the working tree)")
    parser.add_argument("b", help="second revision (or . for the working tree)")
    parser.add_argument("--runs", type=int, default=4, help="runs of each (alternating)")
    parser.epilog = "Arguments after -- go to bench.burst (default: --members 500 --latency 5)."
    given = list(sys.argv[1:] if argv is None else argv)
    split = given.index("--") if "--" in given else len(given)
    args = parser.parse_args(given[:split])
    burst_args = given[split + 1 :] or ["--members", "500", "--latency", "5"]

    with tempfile.TemporaryDirectory(prefix="bench-compare-") as temporary:
        base = Path(temporary)
        folders = [checkout(revision, base / f"tree-{name}") for name, revision in (("a", args.a), ("b", args.b))]
        try:
            runs: dict[str, list[dict[str, float | None]]] = {"a": [], "b": []}
            for number in range(1, args.runs + 1):
                for name, folder in zip(("a", "b"), folders, strict=True):
                    runs[name].append(run_once(folder, burst_args, base / "report.json"))
                    print(
                        f"run {number} {name}: "
                        + ", ".join(f"{label} {show(runs[name][-1][label], fmt)}" for label, _, fmt in FIGURES),
                        flush=True,
                    )
        finally:
            for folder in folders:
                if folder != REPO:
                    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)], check=False)

    print(f"\nmedians of {args.runs} runs each (bench.burst {' '.join(burst_args)}):")
    a, b = medians(runs["a"]), medians(runs["b"])
    width = max(len(label) for label, _, _ in FIGURES)
    print(f"  {'':{width}}  {'A ' + args.a:>14}  {'B ' + args.b:>14}")
    for label, _, fmt in FIGURES:
        print(f"  {label:{width}}  {show(a[label], fmt):>14}  {show(b[label], fmt):>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
