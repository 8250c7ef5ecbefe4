"""What the bot says: the prompt echoed literally (links left working, in linear time), refusals and failures."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import discord
import pytest

from cogs.imagine._render import PROMPT_ECHO_LIMIT, escape_markdown, escaped_prompt, failure_message, over_quota_message
from imaginebot.limits import Limit
from imaginebot.store import Job, Refused

# An unescaped "[": one not preceded by an odd number of backslashes.
UNESCAPED_BRACKET = re.compile(r"(?<!\\)(?:\\\\)*\[")


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat in a hat",
        "**bold** __underline__ ~~strike~~ ||spoiler|| `code` \\backslash",
        "> a quote\n# a heading\n- a list\n  - nested\n-# subtext",
        "see https://example.com/a_b_c and <https://example.com/x*y> for refs",
        "snake_case_name and 2*3*4",
    ],
)
def test_ordinary_prompts_are_escaped_as_discord_py_does(prompt: str) -> None:
    assert escape_markdown(prompt) == discord.utils.escape_markdown(prompt)


def test_every_masked_link_is_escaped_not_only_the_first() -> None:
    prompt = "[harmless](https://example.com) then [click me](https://evil.example)"
    escaped = escape_markdown(prompt)
    assert not UNESCAPED_BRACKET.search(escaped)
    # discord.py's pattern swallows both links in one match and escapes only the first bracket.
    assert UNESCAPED_BRACKET.search(discord.utils.escape_markdown(prompt))


@pytest.mark.parametrize(
    "prompt", [("[" * 2000 + "](" * 1000)[:4000], ("[](" * 1334)[:4000], ("[a](" * 1000), "<" * 4000, "<a:/" * 1000]
)
def test_a_prompt_built_to_make_a_regex_backtrack_is_escaped_whole(prompt: str) -> None:
    """The bracket ones took discord.utils.escape_markdown 0.7-1.8 s each on the event loop (measured); the escape
    here takes well under a millisecond for each."""
    escaped = escaped_prompt(prompt)
    assert len(escaped) <= PROMPT_ECHO_LIMIT
    assert not UNESCAPED_BRACKET.search(escaped.removesuffix(" …"))


def refusal(scope: str, credits: int, used: int) -> Refused:
    return Refused(scope, Limit(credits, "day"), used, datetime(2026, 1, 2, tzinfo=UTC))  # type: ignore[arg-type]


def test_over_quota_suggests_a_smaller_request_only_when_one_could_pass() -> None:
    some_left = over_quota_message(refusal("member", 100, 75), 100)
    assert "costs 1 credit" in some_left and "0.25 credits left of your 1 credit per day" in some_left
    assert "Try fewer images" in some_left

    none_left = over_quota_message(refusal("member", 200, 200), 25)
    assert "0 credits left of your 2 credits per day" in none_left and "resets <t:" in none_left
    assert "Try fewer" not in none_left and "`/quota set`" in none_left

    no_allowance = over_quota_message(refusal("member", 0, 0), 25)
    assert "0 credits left of your 0 credits per day" in no_allowance
    assert "Try fewer" not in no_allowance and "resets" not in no_allowance and "moderator" in no_allowance


def test_budget_refusals_say_who_can_raise_them() -> None:
    assert "`/quota budget`" in over_quota_message(refusal("server", 300, 290), 100)
    assert "operator" in over_quota_message(refusal("global", 300, 290), 100)


def test_a_failure_quoting_the_generator_shows_its_words_literally() -> None:
    job = Job(
        id=7, guild_id=1, channel_id=2, user_id=3, application_id=4, interaction_id=5, interaction_token="t",
        token_expires_at=datetime(2026, 1, 1, tzinfo=UTC), options={"request": {"count": 3}}, cost=300,
        state="failed", created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    text = failure_message(job, "The generator could not make the image: **1024x1024** is not_supported.")
    assert "\\*\\*1024x1024\\*\\*" in text and "not\\_supported" in text
    assert text.startswith("⚠️ <@3>, your images could not be made.")


def test_a_job_waiting_because_the_account_is_out_of_funds_says_so() -> None:
    from cogs.imagine._render import rate_limited_status
    from imaginebot.options import resolve_options

    job = Job(
        id=1,
        guild_id=1,
        channel_id=2,
        user_id=3,
        application_id=4,
        interaction_id=5,
        interaction_token="t",
        token_expires_at=datetime(2026, 11, 26, tzinfo=UTC),
        options={},
        cost=100,
        state="running",
        created_at=datetime(2026, 11, 26, tzinfo=UTC),
    )
    when = datetime(2026, 11, 26, 12, tzinfo=UTC)
    options = resolve_options(prompt="a fox")
    assert "asked us to slow down" in rate_limited_status(job, options, 5, when)
    text = rate_limited_status(job, options, 5, when, out_of_funds=True)
    assert "out of funds" in text and "operator" in text and "slow down" not in text
