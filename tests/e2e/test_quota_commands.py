"""``/quota`` end to end: each moderator command's effect on what ``/imagine`` accepts, through the real bot process.

Costs used below (the contract's formula, default weights): 1024x1024 medium = 1 credit, low = 0.25 credit,
2048x2048 medium = 4 credits; ``count`` multiplies.
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from imaginebot.periods import Period, discord_timestamp, period_bounds
from imaginebot.store import open_store
from tests.e2e.harness import World, content_of, database_locked, has_attachments, job_is, wait_until
from tests.fakes.discord import MANAGE_GUILD, FakeInteraction, FakeMember

FOUR_CREDITS = {"size": "2048x2048", "quality": "medium"}
SIXTEEN_CREDITS = {"size": "2048x2048", "quality": "medium", "count": 4}
ONE_CREDIT = {"size": "1024x1024", "quality": "medium"}
QUARTER_CREDIT = {"size": "1024x1024", "quality": "low"}


# -- helpers shared with test_settings_commands.py -------------------------------------------------------------------


async def run(world: World, invoker: FakeMember, command: str, subcommand: str, /, **options: Any) -> FakeInteraction:
    """``/command subcommand`` as ``invoker`` types it; the answer must be an ephemeral message within 3 s."""
    interaction = await world.discord.invoke(invoker, world.channel, command, subcommand=subcommand, options=options)
    callback = await interaction.wait_for_callback(timeout=3)
    assert callback["type"] == 4, (command, subcommand, callback)
    assert callback["data"]["flags"] & 64, f"/{command} {subcommand} answered publicly: {callback}"
    message = interaction.original
    assert message is not None and not message.mentions_would_ping, (command, subcommand, message)
    return interaction


def plain(text: str) -> str:
    """Message text without bold markers, so assertions read like the sentence a member sees."""
    return text.replace("**", "")


async def say(world: World, invoker: FakeMember, command: str, subcommand: str, /, **options: Any) -> str:
    """The text of an ephemeral answer to ``/command subcommand`` (bold markers removed)."""
    interaction = await run(world, invoker, command, subcommand, **options)
    return plain(interaction.callbacks[0]["data"]["content"])


async def quota_me(world: World, member: FakeMember) -> str:
    """``/quota me`` as ``member`` sees it (bold markers removed)."""
    return plain(await world.quota_me(member))


async def refused_as_non_moderator(
    world: World, invoker: FakeMember, command: str, subcommand: str, /, **options: Any
) -> None:
    """A member who is not a moderator runs a moderator command: an ephemeral refusal."""
    text = await say(world, invoker, command, subcommand, **options)
    assert "Only this server's moderators" in text and "Nothing was changed" in text, (subcommand, text)


async def imagine_refused(world: World, member: FakeMember, prompt: str = "a quiet harbour", **options: Any) -> str:
    """``/imagine`` refused: an ephemeral message, no job, nothing sent to the generator. Returns its text."""
    sent_before = len(world.onemin.requests)
    interaction = await world.imagine(member, prompt=prompt, **options)
    callback = await interaction.wait_for_callback(timeout=3)
    assert callback["type"] == 4 and callback["data"]["flags"] & 64, f"/imagine {options} was not refused: {callback}"
    assert len(world.onemin.requests) == sent_before
    return callback["data"]["content"]


async def imagine_accepted(
    world: World, member: FakeMember, prompt: str = "a quiet harbour", **options: Any
) -> FakeInteraction:
    """``/imagine`` accepted (a public first response: its status), its images delivered and the delivery recorded
    (until then the job counts as pending, and a moderator's reset leaves its credits charged)."""
    interaction = await world.imagine(member, prompt=prompt, **options)
    callback = await interaction.wait_for_callback(timeout=3)
    assert callback["type"] == 4 and not interaction.ephemeral, f"/imagine {options} was refused: {callback}"
    await interaction.wait_for(has_attachments(options.get("count", 1)), timeout=30)
    await wait_until(job_is(world, interaction, "delivered"), timeout=5, what="the delivery recorded")
    return interaction


def reset_tags(period: Period, before: datetime) -> set[str]:
    """The ``<t:...:R>`` tags of the period's end, as seen from ``before`` and from now (a test may cross midnight)."""
    return {discord_timestamp(period_bounds(period, moment)[1]) for moment in (before, datetime.now(UTC))}


def has_tag(text: str, tags: set[str]) -> bool:
    """Whether ``text`` shows one of ``tags``."""
    return any(tag in text for tag in tags)


# -- tests -------------------------------------------------------------------------------------------------------------


@pytest.mark.each_backend
async def test_member_limit_set_clear_and_server_default_change_what_imagine_accepts(world: World) -> None:
    await world.start_bot()
    alice, mod = world.member, world.moderator
    started = datetime.now(UTC)

    assert f"{alice.mention} may now use 1.5 credits per day" in await say(
        world, mod, "quota", "set", member=alice, credits=1.5
    )
    text = await imagine_refused(world, alice, **FOUR_CREDITS)
    assert "costs 4 credits" in text and "1.5 credits left of your 1.5 credits per day" in text, text
    assert has_tag(text, reset_tags("day", started)), text
    await imagine_accepted(world, alice, **QUARTER_CREDIT)
    text = await imagine_refused(world, alice, **ONE_CREDIT, count=2)
    assert "1.25 credits left of your 1.5 credits per day" in text, text  # exact hundredths, no float drift

    view = await say(world, mod, "quota", "view", member=alice)
    assert "1.25 credits left" in view and "1.5 credits per day" in view and "set for this member" in view, view
    assert "Used today: 0.25 credits" in view and has_tag(view, reset_tags("day", started)), view
    assert "Recent requests" in view and "`#1`" in view and "delivered" in view, view
    assert "(refunded)" not in view, view
    # A failed request shows as refunded, and /quota me says what images cost at the bot's weights.
    world.onemin.fail_next("500")
    failed = await world.imagine(alice, prompt="a failing one", **QUARTER_CREDIT)
    await failed.wait_for(lambda i: "not charged" in content_of(i), timeout=10)
    view = await say(world, mod, "quota", "view", member=alice)
    assert "failed · 0.25 credits (refunded)" in view, view
    me = await quota_me(world, alice)
    assert "One 1024x1024 image costs 0.25 credits at low, 1 credit at medium, 4 credits at high quality" in me, me

    text = await say(world, mod, "quota", "clear", member=alice)
    assert "the bot's default" in text, text
    text = await imagine_refused(world, alice, **SIXTEEN_CREDITS)
    assert "costs 16 credits" in text and "9.75 credits left of your 10 credits per day" in text, text

    assert "2 credits per week" in await say(world, mod, "quota", "set-default", credits=2, period="week")
    text = await imagine_refused(world, alice, **FOUR_CREDITS)
    assert "1.75 credits left of your 2 credits per week" in text, text
    assert has_tag(text, reset_tags("week", started)), text
    assert "this server's default" in await say(world, mod, "quota", "view", member=alice)
    # Bob has no limit of his own either: the server default is his too.
    assert "2 credits left of 2 credits per week" in await quota_me(world, world.other)

    # A member limit beats the server default, and 0 stops everything.
    await say(world, mod, "quota", "set", member=alice, credits=0, period="month")
    text = await imagine_refused(world, alice, **QUARTER_CREDIT)
    assert "0 credits left of your 0 credits per month" in text, text
    text = await say(world, mod, "quota", "set", member=alice, credits=1.005)
    assert "two decimals" in text, text
    assert "0 credits per month" in await say(world, mod, "quota", "view", member=alice)


@pytest.mark.each_backend
async def test_most_generous_role_counts_per_day_and_an_exempt_role_beats_even_an_own_limit(world: World) -> None:
    discord, guild = world.discord, world.guild
    weekly = discord.add_role(guild, name="weekly")  # 14 a week = 2 a day
    monthly = discord.add_role(guild, name="monthly")  # 45 a month = 1.5 a day, the most credits in raw numbers
    daily = discord.add_role(guild, name="daily")  # 3 a day
    vip = discord.add_role(guild, name="vip")
    carol = discord.add_member(guild, username="carol", roles=[monthly, weekly])
    dave = discord.add_member(guild, username="dave", roles=[monthly, weekly, daily])
    erin = discord.add_member(guild, username="erin", roles=[weekly, vip])
    await world.start_bot()
    mod = world.moderator

    assert "14 credits per week" in await say(world, mod, "quota", "set-role", role=weekly, credits=14, period="week")
    await say(world, mod, "quota", "set-role", role=monthly, credits=45, period="month")
    await say(world, mod, "quota", "set-role", role=daily, credits=3)
    await say(world, mod, "quota", "set", member=erin, credits=1)
    assert "no member limit" in await say(world, mod, "quota", "exempt", role=vip)

    text = await imagine_refused(world, carol, **SIXTEEN_CREDITS)
    assert "of your 14 credits per week" in text, text
    view = await say(world, mod, "quota", "view", member=carol)
    assert f"from the role {weekly.mention}" in view and "14 credits per week" in view, view

    text = await imagine_refused(world, dave, **FOUR_CREDITS)
    assert "3 credits left of your 3 credits per day" in text, text
    assert f"from the role {daily.mention}" in await say(world, mod, "quota", "view", member=dave)

    # Members without a limited role keep the bot's default.
    assert "10 credits left of 10 credits per day" in await quota_me(world, world.member)

    # Erin's own limit is 1 credit, her role gives 2 a day: the exempt role lifts both.
    await imagine_accepted(world, erin, **FOUR_CREDITS)
    view = await say(world, mod, "quota", "view", member=erin)
    assert "unlimited" in view and f"exempt through the role {vip.mention}" in view, view
    assert "Recent requests" in view and "4 credits" in view, view
    assert "unlimited" in await quota_me(world, erin)
    # A limit set while an exempt role overrides it is saved, and the moderator is told it has no effect.
    text = await say(world, mod, "quota", "set", member=erin, credits=1)
    assert "Saved" in text and "no effect" in text and vip.mention in text and "may now use" not in text, text
    text = await say(world, mod, "quota", "set-role", role=vip, credits=5)
    assert "Saved" in text and "no effect while the role is exempt" in text, text

    assert "no longer exempt" in await say(world, mod, "quota", "exempt", role=vip, on=False)
    text = await imagine_refused(world, erin, **ONE_CREDIT)
    assert "of your 1 credit per day" in text, text  # her own limit, ahead of her role's
    assert "set for this member" in await say(world, mod, "quota", "view", member=erin)

    # Every member holds @everyone, though Discord never lists it among a member's roles.
    await say(world, mod, "quota", "set-role", role=guild.everyone, credits=0.5)
    text = await imagine_refused(world, world.member, **ONE_CREDIT)
    assert "0.5 credits left of your 0.5 credits per day" in text, text
    assert "from the role @everyone" in await say(world, mod, "quota", "view", member=world.member)
    assert "of your 3 credits per day" in await imagine_refused(world, dave, **FOUR_CREDITS)  # still the best role


@pytest.mark.each_backend
async def test_server_and_bot_budgets_refuse_naming_the_budget_and_when_it_resets(world: World) -> None:
    await world.start_bot(GLOBAL_BUDGET_CREDITS="6", GLOBAL_BUDGET_PERIOD="week")
    alice, bob, mod = world.member, world.other, world.moderator
    started = datetime.now(UTC)

    assert "2 credits per day" in await say(world, mod, "quota", "budget", credits=2)
    text = await imagine_refused(world, alice, **FOUR_CREDITS)
    assert "this server's budget of 2 credits per day has only 2 credits left" in text, text
    assert has_tag(text, reset_tags("day", started)), text

    await imagine_accepted(world, alice, **ONE_CREDIT)
    text = await imagine_refused(world, bob, **ONE_CREDIT, count=2)
    assert "this server's budget" in text and "only 1 credit left" in text, text
    await imagine_accepted(world, bob, **ONE_CREDIT)

    assert "no longer has a budget" in await say(world, mod, "quota", "budget-clear")
    text = await imagine_refused(world, bob, **FOUR_CREDITS, count=2)  # 8 credits: within bob's 9, over the bot's 4
    assert "the bot's overall budget of 6 credits per week has only 4 credits left" in text, text
    assert has_tag(text, reset_tags("week", started)), text
    assert "this server's" not in text

    # A moderator's reset gives alice her credits back; the bot's budget keeps what was spent.
    assert "Gave back 1 credit" in await say(world, mod, "quota", "reset", member=alice)
    assert "10 credits left of 10 credits per day" in await quota_me(world, alice)
    text = await imagine_refused(world, alice, **FOUR_CREDITS, count=2)
    assert "the bot's overall budget" in text and "only 4 credits left" in text, text
    await imagine_accepted(world, alice, **FOUR_CREDITS)
    text = await imagine_refused(world, alice, **QUARTER_CREDIT)
    assert "the bot's overall budget" in text and "only 0 credits left" in text, text


@pytest.mark.each_backend
async def test_reset_gives_back_usage_but_the_server_budget_keeps_it(world: World) -> None:
    await world.start_bot(QUOTA_DEFAULT_CREDITS="2")
    alice, mod = world.member, world.moderator
    await say(world, mod, "quota", "budget", credits=3)
    await imagine_accepted(world, alice, **ONE_CREDIT, count=2)
    text = await imagine_refused(world, alice, **QUARTER_CREDIT)
    assert "0 credits left of your 2 credits per day" in text, text

    text = await say(world, mod, "quota", "reset", member=alice)
    assert "Gave back 2 credits" in text and "2 credits left" in text, text
    text = await imagine_refused(world, alice, **ONE_CREDIT, count=2)  # her quota has room, the budget does not
    assert "this server's budget of 3 credits per day has only 1 credit left" in text, text
    await imagine_accepted(world, alice, **ONE_CREDIT)
    assert "1 credit left of 2 credits per day" in await quota_me(world, alice)


@pytest.mark.each_backend
async def test_report_totals_and_its_csv_ledger(world: World) -> None:
    await world.start_bot()
    alice, bob, mod = world.member, world.other, world.moderator
    await imagine_accepted(world, alice, **ONE_CREDIT, count=2)
    await imagine_accepted(world, alice, **QUARTER_CREDIT)
    await imagine_accepted(world, bob, **ONE_CREDIT)
    world.onemin.fail_next("500")
    failed = await world.imagine(bob, prompt="a storm", **FOUR_CREDITS)
    await failed.wait_for(lambda i: any("not charged" in (m.content or "") for m in i.messages), timeout=30)
    await say(world, mod, "quota", "reset", member=bob)

    interaction = await world.discord.invoke(mod, world.channel, "quota", subcommand="report")
    callback = await interaction.wait_for_callback(timeout=3)
    assert callback["type"] == 5 and callback["data"]["flags"] & 64, callback  # deferred, ephemerally
    await interaction.wait_for(lambda i: i.original is not None and bool(i.original.attachments), timeout=10)
    assert interaction.original is not None and not interaction.original.mentions_would_ping
    text = interaction.original.content or ""
    lines = text.splitlines()
    assert "3.25 credits spent" in lines[0], text  # the refund cancels the failed job; a reset spends nothing back
    assert lines[1] == f"1. {alice.mention}: 2.25 credits", text
    assert all(str(bob.id) not in line for line in lines[1:]), text  # bob's usage was reset to 0
    attachments = interaction.original.attachments if interaction.original else []
    assert len(attachments) == 1 and attachments[0].filename.endswith(".csv"), attachments

    rows = list(csv.DictReader(io.StringIO(attachments[0].data.decode())))
    assert rows and {"member_id", "credits"} <= set(rows[0]), rows[:1]
    totals: dict[int, Decimal] = {}
    for row in rows:
        totals[int(row["member_id"])] = totals.get(int(row["member_id"]), Decimal(0)) + Decimal(row["credits"])
    assert totals == {alice.id: Decimal("2.25"), bob.id: Decimal(0)}, rows
    spent = sum(Decimal(row["credits"]) for row in rows if row["reason"] != "reset")
    assert spent == Decimal("3.25"), rows
    assert sorted(row["reason"] for row in rows if int(row["member_id"]) == bob.id) == [
        "refund",
        "reserve",
        "reserve",
        "reset",
    ], rows

    # Over the server's upload limit, the ledger comes as several CSV files, each with its header.
    world.guild.attachment_size_limit = 300
    interaction = await world.discord.invoke(mod, world.channel, "quota", subcommand="report")
    await interaction.wait_for(lambda i: i.original is not None and bool(i.original.attachments), timeout=10)
    parts = [attachment for message in interaction.messages for attachment in message.attachments]
    assert len(parts) > 1 and all(part.filename.endswith(f"-of-{len(parts)}.csv") for part in parts), parts
    assert all(len(part.data) <= 300 for part in parts)
    assert f"in {len(parts)} CSV files" in (interaction.original.content or "")
    assert [row for part in parts for row in csv.DictReader(io.StringIO(part.data.decode()))] == rows


@pytest.mark.each_backend
async def test_non_moderators_are_refused_everywhere_and_nothing_changes(world: World) -> None:
    discord, guild = world.discord, world.guild
    helpers = discord.add_role(guild, name="helpers")
    log_channel = discord.add_channel(guild, name="image-log")
    await world.start_bot()
    alice, bob = world.member, world.other

    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("quota", "set", {"member": alice, "credits": 1000}),
        ("quota", "set-role", {"role": helpers, "credits": 1000}),
        ("quota", "set-default", {"credits": 1000}),
        ("quota", "exempt", {"role": helpers}),
        ("quota", "budget", {"credits": 0}),
        ("quota", "budget-clear", {}),
        ("quota", "clear", {"member": bob}),
        ("quota", "reset", {"member": alice}),
        ("quota", "view", {"member": bob}),
        ("quota", "report", {}),
        ("settings", "show", {}),
        ("settings", "defaults", {"quality": "high"}),
        ("settings", "max-count", {"count": 1}),
        ("settings", "mod-role", {"role": helpers}),
        ("settings", "block", {"words": "harbour"}),
        ("settings", "unblock", {"words": "harbour"}),
        ("settings", "log-channel", {"channel": log_channel}),
    ]
    await imagine_accepted(world, alice, **ONE_CREDIT)
    for command, subcommand, options in attempts:
        await refused_as_non_moderator(world, alice, command, subcommand, **options)
    # Nothing moved: alice's quota, what /imagine accepts and the server's settings are as before.
    assert "9 credits left of 10 credits per day (the bot's default)" in await quota_me(world, alice)
    text = await imagine_refused(world, alice, **SIXTEEN_CREDITS)
    assert "9 credits left of your 10 credits per day" in text, text
    interaction = await imagine_accepted(world, alice, quality="low")  # not blocked, server defaults unchanged
    assert world.onemin.requests[-1]["body"]["promptObject"]["size"] == "1024x1024"
    assert interaction.messages and world.discord.channel_messages(log_channel) == []
    shown = await say(world, world.moderator, "quota", "view", member=alice)
    assert "the bot's default" in shown, shown

    await world.bot.stop()
    async with open_store(world.db.url) as store:
        assert await store.audit_log(guild.id) == []
        settings = await store.get_guild_settings(guild.id)
        assert settings.budget is None and settings.default_limit is None and settings.mod_role_id is None
        assert settings.blocked_words == () and settings.role_limits == {} and settings.exempt_role_ids == frozenset()
        assert await store.get_member_limit(guild.id, alice.id) is None


async def test_manage_server_in_one_channels_overwrites_does_not_make_a_moderator(world: World) -> None:
    # A member allowed to edit one channel's permissions (a ticket, a temporary voice channel) can allow themselves
    # "Manage Server" there: the interaction's permissions then carry it, while no role of theirs grants it.
    await world.start_bot()
    carol = world.discord.add_member(world.guild, username="carol")
    assert not carol.permissions & MANAGE_GUILD
    carol.permission_override = carol.permissions | MANAGE_GUILD
    await refused_as_non_moderator(world, carol, "quota", "set", member=carol, credits=1000)
    await refused_as_non_moderator(world, carol, "quota", "budget-clear")
    assert "the bot's default" in await quota_me(world, carol)
    # A role that grants it does make a moderator.
    carol.roles.append(world.discord.add_role(world.guild, name="managers", permissions=MANAGE_GUILD))
    assert "may now use 1000 credits per day" in await say(world, carol, "quota", "set", member=carol, credits=1000)


@pytest.mark.each_backend
async def test_every_moderator_change_is_audited_with_who_what_before_and_after(world: World) -> None:
    discord, guild = world.discord, world.guild
    helpers = discord.add_role(guild, name="helpers")
    log_channel = discord.add_channel(guild, name="image-log")
    await world.start_bot()
    alice, mod = world.member, world.moderator
    started = datetime.now(UTC)

    changes: list[tuple[str, str, dict[str, Any]]] = [
        ("quota", "set", {"member": alice, "credits": 2.5, "period": "week"}),
        ("quota", "set-role", {"role": helpers, "credits": 7}),
        ("quota", "set-default", {"credits": 3}),
        ("quota", "exempt", {"role": helpers}),
        ("quota", "exempt", {"role": helpers, "on": False}),
        ("quota", "budget", {"credits": 50, "period": "month"}),
        ("quota", "budget-clear", {}),
        ("quota", "clear", {"member": alice}),
        ("quota", "reset", {"member": alice}),
        ("settings", "defaults", {"size": "1536x1024", "quality": "low"}),
        ("settings", "max-count", {"count": 4}),
        ("settings", "mod-role", {"role": helpers}),
        ("settings", "block", {"words": "Kraken, red panda"}),
        ("settings", "unblock", {"words": "KRAKEN"}),
        ("settings", "log-channel", {"channel": log_channel}),
        ("settings", "log-channel", {}),
    ]
    for command, subcommand, options in changes:
        await run(world, mod, command, subcommand, **options)
    # Reading is not a change.
    await run(world, mod, "quota", "view", member=alice)
    await run(world, mod, "settings", "show")

    await world.bot.stop()
    async with open_store(world.db.url) as store:
        entries = list(reversed(await store.audit_log(guild.id)))
    assert [entry.action for entry in entries] == [
        "member_limit.set",
        "role_limit.set",
        "default_limit.set",
        "role_exempt.on",
        "role_exempt.off",
        "budget.set",
        "budget.clear",
        "member_limit.clear",
        "usage.reset",
        "settings.defaults",
        "settings.max_count",
        "settings.mod_role",
        "settings.block",
        "settings.unblock",
        "settings.log_channel",
        "settings.log_channel",
    ]
    assert all(entry.actor_id == mod.id for entry in entries)
    assert all(started.replace(microsecond=0) <= entry.at <= datetime.now(UTC) for entry in entries)
    member_set, role_set, default_set, exempt_on, exempt_off, budget, budget_clear, clear, reset = entries[:9]
    defaults, max_count, mod_role, block, unblock, log_on, log_off = entries[9:]
    assert member_set.target == f"member:{alice.id}" and member_set.before == {"limit": None}
    assert member_set.after == {"limit": {"credits": 250, "period": "week"}}
    assert role_set.target == f"role:{helpers.id}" and role_set.after == {"limit": {"credits": 700, "period": "day"}}
    assert default_set.before == {"default_limit": None}
    assert default_set.after == {"default_limit": {"credits": 300, "period": "day"}}
    assert (exempt_on.before, exempt_on.after) == ({"exempt": False}, {"exempt": True})
    assert (exempt_off.before, exempt_off.after) == ({"exempt": True}, {"exempt": False})
    assert budget.after == {"budget": {"credits": 5000, "period": "month"}}
    assert (budget_clear.before, budget_clear.after) == (budget.after, {"budget": None})
    assert clear.before == member_set.after and clear.after == {"limit": None}
    assert reset.target == f"member:{alice.id}" and reset.before == {"period": "day", "used": 0}
    assert defaults.after == {"default_size": "1536x1024", "default_quality": "low"}
    assert (max_count.before, max_count.after) == ({"max_count": None}, {"max_count": 4})
    assert mod_role.after == {"mod_role_id": helpers.id}
    assert block.after == {"blocked_words": ["kraken", "red panda"]}
    assert (unblock.before, unblock.after) == (block.after, {"blocked_words": ["red panda"]})
    assert log_on.after == {"log_channel_id": log_channel.id}
    assert (log_off.before, log_off.after) == (log_on.after, {"log_channel_id": None})


@pytest.mark.each_backend
async def test_a_member_who_left_can_still_be_cleared_reset_and_viewed(world: World) -> None:
    await world.start_bot()
    alice, mod = world.member, world.moderator
    await say(world, mod, "quota", "set", member=alice, credits=1)
    await imagine_accepted(world, alice, **QUARTER_CREDIT)
    alice.left = True  # the option then carries the user alone, without member data
    assert "0.25 credits" in await say(world, mod, "quota", "view", member=alice)
    assert "Gave back 0.25 credits" in await say(world, mod, "quota", "reset", member=alice)
    assert "Removed" in await say(world, mod, "quota", "clear", member=alice)
    assert "10 credits left" in await say(world, mod, "quota", "view", member=alice)  # the bot-wide default again
    # A new limit only for members: said plainly, not as a failure of the bot.
    text = await say(world, mod, "quota", "set", member=alice, credits=2)
    assert "not a member of this server" in text and "went wrong" not in text, text
    assert "went wrong" not in world.bot.log().lower() and "command quota set failed" not in world.bot.log()


@pytest.mark.each_backend
async def test_the_report_after_a_reset_does_not_say_nobody_generated(world: World) -> None:
    await world.start_bot()
    alice, mod = world.member, world.moderator
    await imagine_accepted(world, alice, **ONE_CREDIT)
    await say(world, mod, "quota", "reset", member=alice)
    interaction = await world.discord.invoke(mod, world.channel, "quota", subcommand="report")
    await interaction.wait_for(lambda i: i.original is not None and bool(i.original.attachments), timeout=10)
    text = interaction.original.content or ""
    assert "1 credit spent" in text and "Nobody has generated" not in text, text
    assert "given back by a moderator" in text, text


@pytest.mark.each_backend
async def test_the_report_on_a_day_of_refunds_says_nothing_was_charged(world: World) -> None:
    await world.start_bot()
    world.onemin.fail_next("500")
    failed = await world.imagine(world.member, prompt="a storm", **ONE_CREDIT)
    await failed.wait_for(lambda i: any("not charged" in (m.content or "") for m in i.messages), timeout=30)
    interaction = await world.discord.invoke(world.moderator, world.channel, "quota", subcommand="report")
    await interaction.wait_for(lambda i: i.original is not None and bool(i.original.attachments), timeout=10)
    text = interaction.original.content or ""
    assert "Every request was refunded" in text and "moderator" not in text, text


async def test_commands_behind_a_slow_database_are_answered_privately_in_time(world: World) -> None:
    await world.start_bot()
    await quota_me(world, world.member)  # the server's settings are read and cached before the lock
    with database_locked(world):
        # The change waits for the lock, and the member's read of their usage waits behind it.
        change = await world.discord.invoke(
            world.moderator, world.channel, "quota", subcommand="set", options={"member": world.other, "credits": 3}
        )
        await asyncio.sleep(0.2)
        mine = await world.discord.invoke(world.member, world.channel, "quota", subcommand="me")
        for interaction in (change, mine):
            callback = await interaction.wait_for_callback(timeout=2.9)
            assert callback["type"] == 5 and callback["data"]["flags"] & 64, callback  # a private "thinking..."
        await asyncio.sleep(1.0)
    # The answers replace the placeholders, privately.
    for interaction, words in ((change, "may now use 3 credits per day"), (mine, "left of")):
        await interaction.wait_for(lambda i: bool(i.original and i.original.content), timeout=10)
        assert interaction.original.ephemeral and words in plain(interaction.original.content), interaction.original
        assert not interaction.followups
    assert "3 credits left" in await quota_me(world, world.other)
