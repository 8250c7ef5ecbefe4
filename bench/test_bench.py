"""Checks of the benchmark's own machinery (run with ``.venv/bin/pytest -q bench``; not part of ``tests/``)."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from types import SimpleNamespace
from typing import Any

import pytest

from bench.burst import main as burst_main
from bench.compare import medians, read_figures
from bench.instrumented_bot import request_kind, token_key
from bench.measure import (
    Summary,
    Timeline,
    percentile,
    process_cpu_seconds,
    process_memory_kib,
    thread_schedule_seconds,
)
from bench.world import DeliveryTracker
from tests.fakes.discord import RecordedFile, RecordedRequest


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 501)]
    assert percentile(values, 50) == 250
    assert percentile(values, 99) == 495
    assert percentile([3.0], 99) == 3.0
    assert Summary.of(values).max == 500


def test_a_timeline_gives_the_pace_between_the_quarter_and_the_median_job() -> None:
    # Three quick jobs, then one every 10 ms: the pace once under way, not the start's.
    moments = [0.001, 0.002, 0.003] + [0.100 + 0.010 * step for step in range(9)]
    timeline = Timeline.of(list(reversed(moments)))
    assert (timeline.count, timeline.first, timeline.last) == (12, 0.001, pytest.approx(0.180))
    assert timeline.quarter == 0.003 and timeline.median == pytest.approx(0.120)  # 3rd and 6th of 12
    assert timeline.spacing == pytest.approx((0.120 - 0.003) / 3)
    assert "median 120 ms" in timeline.ms()
    assert math.isnan(Timeline.of([1.0, 2.0]).spacing)  # no gap between the quarter and the median
    assert Timeline.of([]).count == 0


def test_request_kinds_keep_ids_and_hide_tokens() -> None:
    token = "aW50ZXJhY3Rpb246MTIzOnNlY3JldA"
    kind, key = request_kind("POST", f"/api/v10/interactions/123/{token}/callback")
    assert (kind, key) == ("POST callback", "123")
    kind, key = request_kind("PATCH", f"/api/v10/webhooks/9/{token}/messages/@original")
    assert kind == "PATCH webhook message" and key == token_key(token) and token not in key
    kind, key = request_kind("POST", "/api/v10/channels/456/messages")
    assert (kind, key) == ("POST /channels/{id}/messages", None)


def test_proc_readers_see_this_process() -> None:
    before = process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert process_cpu_seconds(os.getpid()) >= before + 0.03
    memory = process_memory_kib(os.getpid())
    assert memory["VmHWM"] >= memory["VmRSS"] > 0


def test_the_main_threads_schedule_is_read() -> None:
    ran_before, waited_before = thread_schedule_seconds(os.getpid())
    if math.isnan(ran_before):
        pytest.skip("this kernel does not give /proc/PID/task/TID/schedstat")
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    ran, waited = thread_schedule_seconds(os.getpid())
    assert ran >= ran_before + 0.03
    assert waited >= waited_before
    assert math.isnan(thread_schedule_seconds(os.getpid(), tid=2**22 + 1)[0])  # no such thread


def _record(path: str, *, at: float, status: int | None, files: int = 0, json: Any = None) -> RecordedRequest:
    return RecordedRequest(
        method="PATCH",
        path=path,
        query={},
        json=json,
        files=[RecordedFile(f"files[{i}]", f"{i}.png", b"x", "image/png") for i in range(files)],
        time=at,
        wall_time=None,  # type: ignore[arg-type]
        status=status,
    )


def test_tracker_counts_files_across_messages_and_spots_failures() -> None:
    done = SimpleNamespace(id=1, token="tok-a")
    failing = SimpleNamespace(id=2, token="tok-b")
    fake = SimpleNamespace(requests=[], interaction_by_token=None)
    tracker = DeliveryTracker(fake, [done, failing], images_each=3)  # type: ignore[arg-type]
    in_flight = _record("/webhooks/7/tok-a/messages/@original", at=1.0, status=None, files=2)
    fake.requests += [
        in_flight,
        _record("/webhooks/7/tok-a/messages/@original", at=0.5, status=200, json={"content": "generating"}),
        _record("/webhooks/7/tok-b/messages/@original", at=2.0, status=200, json={"content": "sorry, not charged"}),
    ]
    tracker.poll()
    assert tracker.failed.keys() == {2} and tracker.delivered_at == {}
    in_flight.status = 200
    fake.requests.append(_record("/webhooks/7/tok-a", at=3.0, status=200, files=1))
    tracker.poll()
    assert tracker.delivered_at == {1: 3.0} and tracker.settled == 2
    fake.requests.append(_record("/webhooks/7/tok-c", at=4.0, status=413, files=1))
    tracker.poll()
    assert tracker.settled == 2


def test_a_small_burst_runs_end_to_end(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    code = burst_main(["--members", "6", "--latency", "0.3", "--size", "1024x1024", "--json", str(report)])
    out = capsys.readouterr().out
    assert "[PASS] every request delivered: 6/6" in out, out
    assert code in (0, 1)  # 1 only when a performance target is missed on a busy machine
    data = json.loads(report.read_text())
    assert data["delivered"] == 6 and not data["timed_out"] and not data["bot_exit_hung"]
    assert data["first_response"]["answered"] == 6
    # The bot's own timestamps (its parse of each event, discord.py's callback and upload requests) line up.
    assert data["first_response"]["in_bot"]["count"] == 6 and data["end_to_end"]["after_in_bot"]["count"] == 6
    assert 0.3 <= data["end_to_end"]["total"]["p50"] < 10
    timeline = data["end_to_end"]["timeline"]
    assert timeline["at_generator"]["count"] == 6 and timeline["at_discord"]["count"] == 6
    assert 0 <= timeline["at_generator"]["first"] < 0.3 <= timeline["at_discord"]["first"]
    assert data["event_loop"]["ticks"] > 0 and data["memory_mb"]["peak"] > 10
    assert data["fake_discord"] == {"protocol_errors": [], "spec_violations": []}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="--tls makes its certificate with openssl")
def test_a_small_burst_runs_over_tls(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    code = burst_main(["--members", "4", "--latency", "0.2", "--size", "1024x1024", "--tls", "--json", str(report)])
    out = capsys.readouterr().out
    assert "over TLS" in out and "[PASS] every request delivered: 4/4" in out, out
    assert code in (0, 1)
    data = json.loads(report.read_text())
    assert data["delivered"] == 4 and data["fake_discord"] == {"protocol_errors": [], "spec_violations": []}


def test_compare_reads_a_reports_figures_and_takes_medians() -> None:
    report = {
        "first_response": {"total": {"p99": 0.4}},
        "end_to_end": {"ratio_p50": 1.06, "ratio_p99": 1.1, "to_generator": {"p50": 0.2}},
        "event_loop": {"max_stall": 0.025},
        "cpu": {"bot_per_job_ms": 1.7},
    }
    figures = read_figures(report)
    assert figures["first response p99 ms"] == pytest.approx(400)
    assert figures["to the generator p50 ms"] == pytest.approx(200)
    assert figures["after the generator p50 ms"] is None  # not in this report
    other = dict(figures, **{"end-to-end / latency p50": 1.08})
    third = dict(figures, **{"end-to-end / latency p50": 1.04})
    middle = medians([figures, other, third])
    assert middle["end-to-end / latency p50"] == pytest.approx(1.06)
    assert middle["after the generator p50 ms"] is None
