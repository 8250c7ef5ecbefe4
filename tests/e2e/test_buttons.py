"""The buttons under delivered images, end to end: Re-roll, Edit & re-roll and Delete, also after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import World, button_id, database_locked, has_attachments, wait_until
from tests.fakes.discord import FakeInteraction, FakeMember, FakeMessage
from tests.fakes.discord.interactions import walk_components
from tests.fakes.discord.models import DEFAULT_EVERYONE_PERMISSIONS, USE_APPLICATION_COMMANDS

EPHEMERAL = 64
MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, MODAL = 4, 5, 6, 9


def sent(world: World) -> list[dict[str, object]]:
    """The promptObjects the generator received, in order."""
    return [request["body"]["promptObject"] for request in world.onemin.requests]


async def result_of(interaction: FakeInteraction, count: int = 1) -> FakeMessage:
    """Wait for a job's images; return the message that carries its buttons."""
    await interaction.wait_for(has_attachments(count), timeout=30)
    assert interaction.original is not None
    return interaction.original


async def click(world: World, member: FakeMember, message: FakeMessage, label: str) -> FakeInteraction:
    """A member presses a button of a message in the world's channel."""
    return await world.discord.click(member, world.channel, message, button_id(message, label))


async def assert_refused(interaction: FakeInteraction, words: str) -> None:
    """The bot answered with an ephemeral message containing ``words``."""
    callback = await interaction.wait_for_callback(timeout=3)
    assert callback["type"] == MESSAGE and callback["data"]["flags"] & EPHEMERAL, callback
    assert words in callback["data"]["content"], callback["data"]["content"]


@pytest.mark.each_backend
async def test_reroll_is_charged_to_whoever_clicks_and_checks_their_quota(world: World) -> None:
    await world.start_bot(QUOTA_DEFAULT_CREDITS="3")
    original = await world.imagine(prompt="a red fox", size="1536x1024", quality="medium", format="webp")
    result = await result_of(original)
    assert {"Re-roll", "Edit & re-roll", "Delete"} <= {
        c.get("label") for c in walk_components(result.components) if c.get("type") == 2
    }
    assert "1.5 credits left" in await world.quota_me()

    reroll = await click(world, world.other, result, "Re-roll")
    callback = await reroll.wait_for_callback(timeout=3)
    assert callback["type"] == MESSAGE and not callback.get("data", {}).get("flags", 0) & EPHEMERAL
    second = await result_of(reroll)
    assert sent(world)[1] == sent(world)[0]
    assert sent(world)[1]["size"] == "1536x1024" and sent(world)[1]["output_format"] == "webp"
    assert "1.5 credits left" in await world.quota_me(world.other)
    assert "1.5 credits left" in await world.quota_me()  # the requester pays nothing for Bob's re-roll

    # Bob can pay for one more; the next is refused privately, with its cost, and never sent.
    again = await click(world, world.other, second, "Re-roll")
    await result_of(again)
    refused = await click(world, world.other, second, "Re-roll")
    await assert_refused(refused, "1.5 credits")
    assert len(world.onemin.requests) == 3
    assert "0 credits left" in await world.quota_me(world.other)


@pytest.mark.each_backend
async def test_edit_and_reroll_opens_the_prompt_and_runs_the_new_one(world: World) -> None:
    await world.start_bot()
    original = await world.imagine(prompt="a castle on a hill", quality="low", count=2)
    result = await result_of(original, 2)

    opener = await click(world, world.other, result, "Edit & re-roll")
    callback = await opener.wait_for_callback(timeout=3)
    assert callback["type"] == MODAL
    modal = opener.modal
    assert modal is not None
    inputs = [c for c in walk_components(modal["components"]) if c.get("type") == 4]
    assert len(inputs) == 1 and inputs[0]["value"] == "a castle on a hill"

    submitted = await world.discord.submit_modal(
        world.other, world.channel, modal["custom_id"], {inputs[0]["custom_id"]: "a castle under the sea"}
    )
    callback = await submitted.wait_for_callback(timeout=3)
    assert callback["type"] == MESSAGE
    await result_of(submitted, 2)
    assert sent(world)[1] == {**sent(world)[0], "prompt": "a castle under the sea"}
    assert "9.5 credits left" in await world.quota_me(world.other)  # two low images: 0.5 credits
    assert "9.5 credits left" in await world.quota_me()

    # An emptied prompt is refused privately, and costs nothing.
    opener = await click(world, world.other, result, "Edit & re-roll")
    await opener.wait_for_callback(timeout=3)
    submitted = await world.discord.submit_modal(world.other, world.channel, modal["custom_id"], {"prompt": "   "})
    await assert_refused(submitted, "empty")
    assert len(world.onemin.requests) == 2

    # The server's rules as they are now apply to a re-run: two images are over a new maximum of one.
    setting = await world.discord.invoke(
        world.moderator, world.channel, "settings", subcommand="max-count", options={"count": 1}
    )
    await setting.wait_for(lambda i: bool(i.messages), timeout=5)
    refused = await click(world, world.other, result, "Re-roll")
    await assert_refused(refused, "at most 1 image")
    assert len(world.onemin.requests) == 2
    assert "9.5 credits left" in await world.quota_me(world.other)


async def test_a_member_who_may_not_use_commands_here_cannot_re_roll_either(world: World) -> None:
    await world.start_bot()
    muted = world.discord.add_member(world.guild, username="muted", permissions=DEFAULT_EVERYONE_PERMISSIONS)
    result = await result_of(await world.imagine(prompt="a red fox", quality="low"))
    opener = await click(world, muted, result, "Edit & re-roll")
    assert (await opener.wait_for_callback(timeout=3))["type"] == MODAL and opener.modal is not None
    # The member loses "Use Application Commands" in the channel (muted, say).
    muted.permission_override = DEFAULT_EVERYONE_PERMISSIONS & ~USE_APPLICATION_COMMANDS
    await assert_refused(await click(world, muted, result, "Re-roll"), "can't use commands in this channel")
    await assert_refused(await click(world, muted, result, "Edit & re-roll"), "can't use commands in this channel")
    # The modal opened before is refused as well.
    submitted = await world.discord.submit_modal(muted, world.channel, opener.modal["custom_id"], {"prompt": "mine"})
    await assert_refused(submitted, "can't use commands in this channel")
    assert len(world.onemin.requests) == 1


@pytest.mark.each_backend
async def test_delete_only_for_the_requester_or_a_moderator(world: World) -> None:
    await world.start_bot()
    mine = await result_of(await world.imagine(prompt="mine", quality="low"))
    also_mine = await result_of(await world.imagine(prompt="also mine", quality="low"))

    refused = await click(world, world.other, mine, "Delete")
    await assert_refused(refused, "Only the member")
    assert not mine.deleted and mine.attachments

    deleted = await click(world, world.member, mine, "Delete")
    callback = await deleted.wait_for_callback(timeout=3)
    assert callback["type"] == DEFERRED_UPDATE
    await world.discord.wait_for(lambda: mine.deleted, timeout=5, what="the result deleted")
    # Through the click's own webhook, which needs no permission in a channel the bot may not see.
    [removal] = [r for r in world.discord.requests if r.method == "DELETE"]
    assert removal.path.endswith(f"/webhooks/{world.discord.application_id}/{deleted.token}/messages/@original")

    by_mod = await click(world, world.moderator, also_mine, "Delete")
    await by_mod.wait_for_callback(timeout=3)
    await world.discord.wait_for(lambda: also_mine.deleted, timeout=5, what="the result deleted by a moderator")


@contextlib.asynccontextmanager
async def a_result_behind_a_blocked_write(world: World) -> AsyncIterator[FakeMessage]:
    """A delivered result, then the database locked with another member's request waiting for it: a click's read
    of the job waits behind that write until the block ends (and the request is delivered after it)."""
    await world.start_bot()
    result = await result_of(await world.imagine(prompt="mine", quality="low"))
    await wait_until(lambda: "job 1 delivered" in world.bot.log(), timeout=5, what="the delivery recorded")
    with database_locked(world):
        waiting = await world.imagine(world.other, prompt="waits for the lock", quality="low")
        await asyncio.sleep(0.2)
        yield result
    await waiting.wait_for(has_attachments(1), timeout=30)


async def test_delete_behind_a_slow_write_is_acknowledged_in_time(world: World) -> None:
    async with a_result_behind_a_blocked_write(world) as result:
        refused = await click(world, world.other, result, "Delete")
        deleted = await click(world, world.member, result, "Delete")
        for interaction in (refused, deleted):
            callback = await interaction.wait_for_callback(timeout=2.9)
            assert callback["type"] == DEFERRED_UPDATE, callback  # the message stays as it is meanwhile
        await asyncio.sleep(1.0)
        assert not result.deleted
    await world.discord.wait_for(lambda: result.deleted, timeout=10, what="the result deleted")
    # The other member is told privately, in a new message: the result was not touched on their behalf.
    await refused.wait_for(lambda i: bool(i.followups), timeout=10)
    [answer] = refused.followups
    assert answer.ephemeral and "Only the member" in answer.content


async def test_edit_and_reroll_behind_a_slow_read_asks_to_press_again_in_time(world: World) -> None:
    async with a_result_behind_a_blocked_write(world) as result:
        # A modal must be the first answer and cannot be deferred: the member is asked to press again, in time.
        opener = await click(world, world.member, result, "Edit & re-roll")
        await assert_refused(opener, "press **Edit & re-roll** again")
    opener = await click(world, world.member, result, "Edit & re-roll")
    callback = await opener.wait_for_callback(timeout=3)
    assert callback["type"] == MODAL


@pytest.mark.each_backend
async def test_buttons_keep_working_after_a_restart(world: World) -> None:
    await world.start_bot()
    result = await result_of(await world.imagine(prompt="an old lighthouse", quality="low"))
    # Crash only once the delivery is recorded (a crash before that would count the job as interrupted).
    await wait_until(lambda: "job 1 delivered" in world.bot.log(), timeout=5, what="the delivery recorded")
    await world.restart_bot(crash=True)

    reroll = await click(world, world.other, result, "Re-roll")
    await result_of(reroll)
    await wait_until(lambda: "job 2 delivered" in world.bot.log(), timeout=5, what="the re-roll recorded")
    opener = await click(world, world.moderator, result, "Edit & re-roll")
    await opener.wait_for_callback(timeout=3)
    assert opener.modal is not None
    await world.restart_bot(crash=True)  # the modal is answered by a process that never saw it open
    submitted = await world.discord.submit_modal(
        world.moderator, world.channel, opener.modal["custom_id"], {"prompt": "a new lighthouse"}
    )
    await result_of(submitted)
    assert [request["prompt"] for request in sent(world)] == ["an old lighthouse"] * 2 + ["a new lighthouse"]

    refused = await click(world, world.other, result, "Delete")
    await assert_refused(refused, "Only the member")
    deleted = await click(world, world.member, result, "Delete")
    await deleted.wait_for_callback(timeout=3)
    await wait_until(lambda: result.deleted, timeout=5, what="the result deleted after the restart")
    assert "9.75 credits left" in await world.quota_me(world.other)
    assert "9.75 credits left" in await world.quota_me(world.moderator)


async def test_a_result_whose_saved_options_cannot_be_read_is_refused_plainly(world: World) -> None:
    await world.start_bot()
    result = await result_of(await world.imagine(prompt="a red fox", quality="low"))
    await wait_until(lambda: "job 1 delivered" in world.bot.log(), timeout=5, what="the delivery recorded")
    with contextlib.closing(sqlite3.connect(world.database)) as db:  # a row another version of the bot wrote
        (raw,) = db.execute("SELECT options FROM jobs WHERE id = 1").fetchone()
        options = json.loads(raw)
        del options["request"]["format"]
        db.execute("UPDATE jobs SET options = ? WHERE id = 1", (json.dumps(options),))
        db.commit()
    for label in ("Re-roll", "Edit & re-roll"):
        await assert_refused(await click(world, world.other, result, label), "can no longer be read")
    assert len(world.onemin.requests) == 1
