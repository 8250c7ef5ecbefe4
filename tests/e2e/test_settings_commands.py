"""``/settings`` end to end: blocked words, ``/imagine`` defaults, max count, moderator role and log channel, each
shown by what ``/imagine`` then accepts, sends to the generator or posts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imaginebot.store import open_store
from tests.e2e.harness import MODERATOR_PERMISSIONS, World, content_of, has_attachments
from tests.e2e.test_quota_commands import (
    FOUR_CREDITS,
    imagine_accepted,
    imagine_refused,
    quota_me,
    refused_as_non_moderator,
    say,
)
from tests.fakes.discord import FakeMember, FakeMessage

BLOCKED = "blocked"


def prompt_sent(world: World) -> dict[str, Any]:
    """The promptObject of the latest generation request."""
    return world.onemin.requests[-1]["body"]["promptObject"]


SUPPRESS_EMBEDS = 1 << 2


@pytest.mark.each_backend
async def test_blocked_words_are_refused_without_echo_and_unblock_allows_them_again(world: World) -> None:
    await world.start_bot()
    alice, mod = world.member, world.moderator

    assert "Blocked 2 new" in await say(world, mod, "settings", "block", words="Kraken, red  panda, kraken")
    for prompt in ("A KRAKEN rises!", "the kraken's lair", "a Red   Panda at dawn", "ＫＲＡＫＥＮ, full-width"):
        refusal = await imagine_refused(world, alice, prompt=prompt)
        assert BLOCKED in refusal, (prompt, refusal)
        assert "kraken" not in refusal.lower() and "panda" not in refusal.lower(), refusal
    assert "10 credits left" in await quota_me(world, alice)  # refused before anything was reserved

    await imagine_accepted(world, alice, prompt="Krakenberg castle, red pandas in the fog")
    assert prompt_sent(world)["prompt"] == "Krakenberg castle, red pandas in the fog"

    assert "already blocked" in await say(world, mod, "settings", "block", words="kraken")
    assert "Unblocked 1" in await say(world, mod, "settings", "unblock", words="KRAKEN")
    assert "None of those were blocked" in await say(world, mod, "settings", "unblock", words="kraken")
    await imagine_accepted(world, alice, prompt="A KRAKEN rises!")
    assert prompt_sent(world)["prompt"] == "A KRAKEN rises!"
    assert BLOCKED in await imagine_refused(world, alice, prompt="one red panda")
    assert len(world.onemin.requests) == 2

    shown = await say(world, mod, "settings", "show")
    assert "Blocked words: 1" in shown and "`red panda`" in shown, shown
    assert "at most 100 characters" in await say(world, mod, "settings", "block", words="x" * 101)
    assert "Blocked words: 1" in await say(world, mod, "settings", "show")


async def test_a_long_blocked_list_is_shown_whole_in_a_file(world: World) -> None:
    await world.start_bot()
    words = [f"forbidden phrase number {n}" for n in range(60)]
    for batch in (words[:30], words[30:]):  # the option takes 1000 characters at most
        assert "Blocked 30 new" in await say(world, world.moderator, "settings", "block", words=", ".join(batch))
    interaction = await world.discord.invoke(world.moderator, world.channel, "settings", subcommand="show")
    await interaction.wait_for_callback(timeout=3)
    assert "all 60 in the attached file" in (interaction.original.content or "")
    [attachment] = interaction.original.attachments
    assert attachment.filename == "blocked-words.txt"
    assert attachment.data.decode().splitlines() == words


async def test_a_crowded_settings_page_keeps_every_line_and_moves_the_blocked_list_to_a_file(world: World) -> None:
    await world.start_bot(GLOBAL_BUDGET_CREDITS="500", GLOBAL_BUDGET_PERIOD="month")
    mod = world.moderator
    for n in range(25):
        role = world.discord.add_role(world.guild, name=f"tier {n}")
        await say(world, mod, "quota", "set-role", role=role, credits=n + 1, period="week")
    words = [f"word{n:03d}" for n in range(80)]  # 879 characters inline: short enough alone, not beside the rest
    assert "Blocked 80 new" in await say(world, mod, "settings", "block", words=", ".join(words))
    await say(world, mod, "settings", "defaults", count=4)
    await say(world, mod, "settings", "max-count", count=2)
    interaction = await world.discord.invoke(mod, world.channel, "settings", subcommand="show")
    await interaction.wait_for_callback(timeout=3)
    shown = interaction.original.content or ""
    assert len(shown) <= 2000
    assert "count 4 (capped at 2" in shown, shown
    assert "Bot-wide budget" in shown and "all 80 in the attached file" in shown, shown
    assert shown.count("`") % 2 == 0
    [attachment] = interaction.original.attachments
    assert attachment.data.decode().splitlines() == words


async def test_too_many_role_limits_to_list_are_all_in_a_file_by_name(world: World) -> None:
    await world.start_bot()
    mod = world.moderator
    roles = [world.discord.add_role(world.guild, name=f"tier {n}") for n in range(40)]
    for n, role in enumerate(roles):
        await say(world, mod, "quota", "set-role", role=role, credits=n + 1, period="week")
    await say(world, mod, "quota", "exempt", role=roles[0])
    interaction = await world.discord.invoke(mod, world.channel, "settings", subcommand="show")
    await interaction.wait_for_callback(timeout=3)
    shown = interaction.original.content or ""
    assert "role-limits.txt" in shown and "cut short" not in shown, shown
    [attachment] = interaction.original.attachments
    listed = attachment.data.decode()
    assert all(f"@tier {n} ({role.id}): {n + 1} credit" in listed for n, role in enumerate(roles)), listed
    assert f"Exempt roles (no member limit):\n  @tier 0 ({roles[0].id})" in listed


async def test_settings_replies_say_when_a_default_count_is_capped_and_show_keeps_backticks_paired(
    world: World,
) -> None:
    await world.start_bot()
    mod = world.moderator
    assert "Requests without a count get 2" not in await say(world, mod, "settings", "defaults", count=2)
    assert "Requests without a count get 1" in await say(world, mod, "settings", "max-count", count=1)
    assert "Requests without a count get 1" in await say(world, mod, "settings", "defaults", count=6)
    await say(world, mod, "settings", "block", words="a`b, c``d, e")
    shown = await say(world, mod, "settings", "show")
    blocked = shown.splitlines()[-1]
    # Each entry fenced by more backticks than it holds in a row: "`` a`b ``", "``` c``d ```", "`e`".
    assert "`` a`b ``" in blocked and "``` c``d ```" in blocked and "`e`" in blocked, blocked


@pytest.mark.each_backend
async def test_two_moderators_blocking_words_at_once_both_keep_them(world: World) -> None:
    await world.start_bot()
    second = world.discord.add_member(world.guild, username="mod2", permissions=MODERATOR_PERMISSIONS)
    await say(world, world.moderator, "settings", "show")  # the settings are cached
    blocks = await asyncio.gather(
        *(
            world.discord.invoke(moderator, world.channel, "settings", subcommand="block", options={"words": word})
            for moderator, word in ((world.moderator, "kraken"), (second, "dragon"))
        )
    )
    for interaction in blocks:
        await interaction.wait_for_callback(timeout=3)
    shown = await say(world, world.moderator, "settings", "show")
    assert "Blocked words: 2" in shown and "`kraken`" in shown and "`dragon`" in shown, shown


@pytest.mark.each_backend
async def test_server_defaults_shape_the_next_request_and_max_count_refuses(world: World) -> None:
    await world.start_bot()
    alice, mod = world.member, world.moderator

    text = await say(world, mod, "settings", "defaults", size="1536x1024", quality="low", count=2, format="webp")
    assert "1536x1024" in text and "low" in text and "webp" in text, text
    interaction = await world.imagine(alice, prompt="a windmill")
    await interaction.wait_for(has_attachments(2), timeout=30)
    assert prompt_sent(world) == {
        "prompt": "a windmill",
        "size": "1536x1024",
        "quality": "low",
        "n": 2,
        "output_format": "webp",
    }
    assert "0.75 credits" in content_of(interaction)  # 2 x 0.25 x 1.5
    # compression needs jpeg or webp: the server's webp default counts.
    await imagine_accepted(world, alice, prompt="a windmill", compression=40, count=1)
    assert prompt_sent(world)["output_compression"] == 40 and prompt_sent(world)["output_format"] == "webp"
    # What the member types still wins over the server's defaults.
    await imagine_accepted(world, alice, prompt="a windmill", size="1024x1024", quality="medium", format="png", count=1)
    assert prompt_sent(world) == {
        "prompt": "a windmill",
        "size": "1024x1024",
        "quality": "medium",
        "n": 1,
        "output_format": "png",
    }

    text = await say(world, mod, "settings", "defaults", size="1000x1000")
    assert "992x992" in text and "1008x1008" in text, text  # refused with the nearest valid sizes
    assert "at least one" in await say(world, mod, "settings", "defaults")

    assert "at most 1 image" in await say(world, mod, "settings", "max-count", count=1)
    sent = len(world.onemin.requests)
    refusal = await imagine_refused(world, alice, prompt="a windmill", count=3)
    assert "at most 1 image" in refusal, refusal
    assert len(world.onemin.requests) == sent
    # The server's default count of 2 is capped by the new maximum rather than refused.
    await imagine_accepted(world, alice, prompt="a windmill")
    assert prompt_sent(world)["n"] == 1 and prompt_sent(world)["size"] == "1536x1024"

    shown = await say(world, mod, "settings", "show")
    assert "size 1536x1024, quality low, count 2 (capped at 1 by the most per request), format webp" in shown, shown
    assert "Most images per request: 1" in shown, shown


@pytest.mark.each_backend
async def test_mod_role_makes_a_member_a_moderator_until_it_is_removed(world: World) -> None:
    helpers = world.discord.add_role(world.guild, name="helpers")
    frank = world.discord.add_member(world.guild, username="frank", roles=[helpers])
    await world.start_bot()
    alice, mod = world.member, world.moderator

    await refused_as_non_moderator(world, frank, "quota", "set-default", credits=3)
    assert "10 credits left of 10 credits per day" in await quota_me(world, alice)

    assert helpers.mention in await say(world, mod, "settings", "mod-role", role=helpers)
    assert "3 credits per day" in await say(world, frank, "quota", "set-default", credits=3)
    refusal = await imagine_refused(world, alice, **FOUR_CREDITS)
    assert "of your 3 credits per day" in refusal, refusal
    assert f"Moderator role: {helpers.mention}" in await say(world, frank, "settings", "show")
    await refused_as_non_moderator(world, alice, "settings", "show")  # alice does not hold the role

    assert "No moderator role" in await say(world, mod, "settings", "mod-role")
    await refused_as_non_moderator(world, frank, "quota", "set-default", credits=100)
    assert "of your 3 credits per day" in await imagine_refused(world, alice, **FOUR_CREDITS)


@pytest.mark.each_backend
async def test_an_entry_saved_before_the_rules_changed_can_still_be_unblocked(world: World) -> None:
    await world.start_bot()
    await world.bot.stop()
    # Saved as typed, vowel points and all, by a version that kept them.
    async with open_store(world.db.url) as store:
        await store.update_guild_settings(
            world.guild.id, actor_id=world.moderator.id, action="settings.block", blocked_words=("مَلِك",)
        )
    await world.restart_bot(crash=False)
    assert "already blocked" in await say(world, world.moderator, "settings", "block", words="ملك")  # no twin
    assert "Unblocked 1" in await say(world, world.moderator, "settings", "unblock", words="ملك")


@pytest.mark.each_backend
async def test_log_channel_gets_every_delivery_with_requester_prompt_and_link_pinging_nobody(world: World) -> None:
    log_channel = world.discord.add_channel(world.guild, name="image-log")
    locked = world.discord.add_channel(world.guild, name="locked", bot_can_send=False)
    await world.start_bot()
    alice, bob, mod = world.member, world.other, world.moderator

    def logged() -> list[FakeMessage]:
        return world.discord.channel_messages(log_channel)

    assert "cannot post" in await say(world, mod, "settings", "log-channel", channel=locked)
    assert log_channel.mention in await say(world, mod, "settings", "log-channel", channel=log_channel)

    prompt = f"a lighthouse for {bob.mention} and @everyone, like https://example.com/lighthouse.gif"
    interaction = await imagine_accepted(world, alice, prompt=prompt)
    await world.discord.wait_for(lambda: len(logged()) == 1, timeout=10, what="the log-channel message")
    entry = logged()[0]
    result = interaction.original
    assert result is not None
    assert alice.mention in entry.content and prompt in entry.content, entry.content
    assert f"https://discord.com/channels/{world.guild.id}/{world.channel.id}/{result.id}" in entry.content
    assert entry.mentions_would_ping == set(), entry.mentions_would_ping
    assert entry.allowed_mentions is not None and not entry.embeds and not entry.attachments
    assert entry.flags & SUPPRESS_EMBEDS  # the link in the prompt is not unfolded into a preview

    # A long prompt full of markdown still fits in one message.
    long_prompt = ("**bold** _it_ ~~no~~ `code` > quote @here " * 120)[:4000].strip()
    await imagine_accepted(world, bob, prompt=long_prompt, quality="low")
    await world.discord.wait_for(lambda: len(logged()) == 2, timeout=10, what="the second log-channel message")
    assert bob.mention in logged()[1].content and len(logged()[1].content) <= 2000
    assert logged()[1].mentions_would_ping == set()

    # Delivered in the channel once the token has expired: the link points at that channel message.
    world.onemin.latency = 1.0
    late = await world.imagine(alice, prompt="a slow comet", quality="low")
    await late.wait_for_callback(timeout=3)
    late.expire_token()
    await world.discord.wait_for(lambda: len(logged()) == 3, timeout=20, what="the third log-channel message")
    posted = [m for m in world.discord.channel_messages(world.channel) if m.attachments]
    assert len(posted) == 1
    assert f"https://discord.com/channels/{world.guild.id}/{world.channel.id}/{posted[0].id}" in logged()[2].content
    assert logged()[2].mentions_would_ping == set()
    # The bot learns that the token expired early only by trying it.
    world.discord.protocol_errors[:] = [e for e in world.discord.protocol_errors if not e.startswith("50027")]
    world.onemin.latency = 0.0

    assert "off" in await say(world, mod, "settings", "log-channel")
    await imagine_accepted(world, alice, prompt="a quiet night", quality="low")
    await wait_for_job_state(world, alice, job_id=4, state="delivered")
    # Logging again: the next delivery is the next entry, so the one made while the log was off was never posted.
    await say(world, mod, "settings", "log-channel", channel=log_channel)
    await imagine_accepted(world, alice, prompt="a bright morning", quality="low")
    await world.discord.wait_for(lambda: len(logged()) == 4, timeout=10, what="the fourth log-channel message")
    assert "a bright morning" in logged()[3].content
    assert all("a quiet night" not in message.content for message in logged())


async def wait_for_job_state(world: World, member: FakeMember, *, job_id: int, state: str) -> None:
    """Poll a moderator's ``/quota view`` until the member's job shows ``state``."""
    line = ""
    for _ in range(50):
        view = await say(world, world.moderator, "quota", "view", member=member)
        line = next((line for line in view.splitlines() if line.startswith(f"`#{job_id}`")), "")
        if f"· {state} ·" in line:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not become {state}: {line!r}")
