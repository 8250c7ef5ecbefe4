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


def test_the_role_file_names_everyone_once_and_lists_only_what_is_set() -> None:
    from types import SimpleNamespace

    from cogs.settings import _role_file
    from imaginebot.limits import Limit

    roles = {1: "@everyone", 2: "Patrons"}
    guild = SimpleNamespace(get_role=lambda role_id: SimpleNamespace(name=roles[role_id]) if role_id in roles else None)
    text = _role_file(guild, {1: Limit(500, "day")}, ()).fp.read().decode()  # type: ignore[arg-type]
    assert text == "Role limits (the most generous of a member's roles applies):\n  @everyone (1): 5 credits per day\n"
    text = _role_file(guild, {}, (2, 3)).fp.read().decode()  # type: ignore[arg-type]
    assert text == "Exempt roles (no member limit):\n  @Patrons (2)\n  role 3\n"
