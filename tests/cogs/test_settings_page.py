"""/settings show fits Discord's 2000 characters by whole lines, never cutting one in the middle."""

from __future__ import annotations

from cogs.settings import _within


def test_lines_that_fit_are_kept_whole() -> None:
    lines = ["one", "two", "three"]
    assert _within(lines, 2000) == lines


def test_a_line_too_long_is_left_out_and_the_ones_after_it_kept() -> None:
    lines = ["defaults", "x" * 2500, "exempt roles", "bot-wide budget"]
    kept = _within(lines, 2000)
    assert kept[:3] == ["defaults", "exempt roles", "bot-wide budget"]
    assert kept[-1].startswith("-# (cut short")
    assert len("\n".join(kept)) <= 2000
