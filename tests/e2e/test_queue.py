"""The queue end to end: positions on the public status, Cancel, fairness, 429 pauses, restarts, token expiry."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from tests.e2e.harness import (
    World,
    button_id,
    content_of,
    database_locked,
    has_attachments,
    job_is,
    job_state,
    wait_until,
)
from tests.fakes.discord import FakeInteraction, FakeMessage
from tests.fakes.discord.interactions import walk_components

EPHEMERAL = 64
# The messenger's minimum spacing of queue-position edits of one job (cogs/imagine/_messenger.py), with slack
# for the fake's clock: two position edits of one job closer than this break the rate limit.
MIN_EDIT_SPACING = 4.0


def has_button(message: FakeMessage | None, label: str) -> bool:
    """Whether a message carries a button labelled ``label``."""
    if message is None:
        return False
    return any(c.get("type") == 2 and c.get("label") == label for c in walk_components(message.components))


def status(interaction: FakeInteraction) -> str:
    """The public status text of a job: its interaction's original response."""
    return interaction.original.content if interaction.original is not None else ""


def prompts(world: World) -> list[str]:
    """The prompts the generator received, in order."""
    return [request["body"]["promptObject"]["prompt"] for request in world.onemin.requests]


def status_times(world: World, interaction: FakeInteraction, text: str) -> list[float]:
    """When the bot set the interaction's status (first response or edit) to a text containing ``text``
    (monotonic seconds)."""
    times = []
    for request in world.discord.requests:
        if interaction.token not in request.path:
            continue
        body = request.json or {}
        if request.method == "POST" and request.path.endswith("/callback"):
            body = body.get("data") or {}
        elif request.method != "PATCH":
            continue
        if text in (body.get("content") or ""):
            times.append(request.time)
    return times


async def status_message_recorded(world: World, interaction: FakeInteraction) -> bool:
    """Whether the bot's job table holds the id of the interaction's status message (its first response)."""
    rows = await world.db.rows(f"SELECT status_message_id FROM jobs WHERE interaction_id = {int(interaction.id)}")
    return bool(rows) and interaction.original is not None and rows[0]["status_message_id"] == interaction.original.id


async def one_running_one_queued(world: World, **options: Any) -> FakeInteraction:
    """The bot with one slot, held 6 s by a job of the member's; another member's ``/imagine`` (``options``) waits
    behind it with a Cancel button: its interaction."""
    world.onemin.latency = 6  # the running job holds the only slot throughout
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    await world.imagine(prompt="running", quality="low")
    await wait_until(lambda: prompts(world) == ["running"], timeout=10, what="the first generation")
    queued = await world.imagine(world.other, prompt="queued one", **options)
    await queued.wait_for(lambda i: has_button(i.original, "Cancel"), timeout=5)
    return queued


def drop_expected_errors(world: World, *codes: str) -> None:
    """Discord answered these codes because the test made it so; check they happened, then forget them."""
    errors = world.discord.protocol_errors
    for code in codes:
        assert any(error.startswith(f"{code}:") for error in errors), (code, errors)
    errors[:] = [error for error in errors if error.split(":", 1)[0] not in codes]


@pytest.mark.each_backend
async def test_queued_jobs_show_their_position_and_move_up(world: World) -> None:
    # The third waits for two jobs (7 s), longer than the spacing of position edits (5 s): it sees its place change.
    world.onemin.latency = 3.5
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    first = await world.imagine(prompt="first", quality="low")
    await wait_until(lambda: prompts(world) == ["first"], timeout=10, what="the first generation")
    second = await world.imagine(world.other, prompt="second", quality="low")
    third = await world.imagine(world.moderator, prompt="third", quality="low")
    for interaction in (second, third):
        callback = await interaction.wait_for_callback(timeout=3)
        # The first response is the public status itself: queued, with its position.
        assert callback["type"] == 4 and not callback.get("data", {}).get("flags", 0) & EPHEMERAL
        assert "queued" in callback["data"]["content"]

    await second.wait_for(lambda i: "queued" in status(i) and has_button(i.original, "Cancel"), timeout=5)
    await third.wait_for(lambda i: "queued" in status(i) and has_button(i.original, "Cancel"), timeout=5)
    assert "next in line" in status(second)
    assert "1 ahead" in status(third)
    assert f"<@{world.other.id}>" in status(second) and not second.original.mentions_would_ping

    # The first job finishes: the second starts (its Cancel button goes) and the third is next.
    await second.wait_for(lambda i: "Generating" in status(i), timeout=10)
    assert not has_button(second.original, "Cancel")
    await third.wait_for(lambda i: "next in line" in status(i), timeout=10)
    assert has_button(third.original, "Cancel")
    world.onemin.latency = 0.2

    for interaction in (first, second, third):
        await interaction.wait_for(has_attachments(1), timeout=20)
    assert prompts(world) == ["first", "second", "third"]
    # The "generating" edits of the queued ones went out before their results, never over them.
    await asyncio.sleep(0.5)
    assert all("Generating" not in status(i) for i in (first, second, third)), [status(i) for i in (second, third)]
    queued_edits = status_times(world, third, "queued")
    assert len(queued_edits) == 2, queued_edits
    assert queued_edits[1] - queued_edits[0] >= MIN_EDIT_SPACING, queued_edits


async def test_a_queued_job_past_its_tokens_15_minutes_still_shows_where_it_stands(world: World) -> None:
    world.onemin.latency = 6
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    await world.imagine(prompt="first", quality="low")
    await wait_until(lambda: prompts(world) == ["first"], timeout=10, what="the first generation")
    second = await world.imagine(world.other, prompt="second", quality="low")
    third = await world.imagine(world.moderator, prompt="third", quality="low")
    await third.wait_for(lambda i: "1 ahead" in status(i), timeout=5)
    await wait_until(lambda: status_message_recorded(world, third), timeout=10, what="the status message kept")
    for interaction in (second, third):
        interaction.expire_token()  # the webhook answers 401/50027 from now on

    # Edited as the bot's own messages in the channel instead: the second generates, the third is next.
    await second.wait_for(lambda i: "Generating" in status(i), timeout=15)
    assert not has_button(second.original, "Cancel")
    await third.wait_for(lambda i: "next in line" in status(i), timeout=15)
    assert has_button(third.original, "Cancel") and not third.original.mentions_would_ping
    world.onemin.latency = 0.2
    world.discord.protocol_errors.clear()  # the expired tokens' refusals, expected


@pytest.mark.each_backend
async def test_two_cancels_at_once_refund_once_and_the_second_is_told_it_was_cancelled(world: World) -> None:
    world.onemin.latency = 4
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    await world.imagine(prompt="running")
    await wait_until(lambda: prompts(world) == ["running"], timeout=10, what="the first generation")
    queued = await world.imagine(world.other, prompt="queued one")
    await queued.wait_for(lambda i: has_button(i.original, "Cancel"), timeout=5)
    cancel_id = button_id(queued.original, "Cancel")
    clicks = await asyncio.gather(
        world.discord.click(world.other, world.channel, queued.original, cancel_id),
        world.discord.click(world.moderator, world.channel, queued.original, cancel_id),
    )
    callbacks = [await click.wait_for_callback(timeout=3) for click in clicks]
    assert sorted(callback["type"] for callback in callbacks) == [4, 7]  # one edit, one private answer
    [answer] = [callback for callback in callbacks if callback["type"] == 4]
    assert "already cancelled" in answer["data"]["content"] and answer["data"]["flags"] & EPHEMERAL
    assert "10 credits left" in await world.quota_me(world.other)
    world.onemin.latency = 0.2


async def test_a_cancel_slow_to_write_is_acknowledged_in_time_then_shows_cancelled(world: World) -> None:
    queued = await one_running_one_queued(world)
    cancel_id = button_id(queued.original, "Cancel")
    with database_locked(world):
        cancel = await world.discord.click(world.other, world.channel, queued.original, cancel_id)
        # Within Discord's 3 s though not written yet: a deferred update, which shows nothing.
        callback = await cancel.wait_for_callback(timeout=2.9)
        assert callback["type"] == 6, callback
        await asyncio.sleep(1.0)
        assert "queued" in status(queued)  # nothing claimed before it is written
    # Written: the pressed status says so through the click's token, and the credits are back.
    await queued.wait_for(lambda i: "Cancelled" in status(i) and not has_button(i.original, "Cancel"), timeout=10)
    edit = [r for r in world.discord.requests if r.method == "PATCH" and cancel.token in r.path]
    assert edit and edit[-1].path.endswith("/messages/@original")
    assert "10 credits left" in await world.quota_me(world.other)
    assert prompts(world) == ["running"]


@pytest.mark.each_backend
async def test_cancel_refunds_and_the_job_never_reaches_the_generator(world: World) -> None:
    # Long enough for every click below to happen while the first job holds the only slot.
    world.onemin.latency = 4
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    running = await world.imagine(prompt="running")
    await wait_until(lambda: prompts(world) == ["running"], timeout=10, what="the first generation")
    mine = await world.imagine(world.other, prompt="bob's first", size="1536x1024")  # 1.5 credits
    also_mine = await world.imagine(world.other, prompt="bob's second", size="1536x1024")
    await mine.wait_for(lambda i: has_button(i.original, "Cancel"), timeout=5)
    await also_mine.wait_for(lambda i: has_button(i.original, "Cancel"), timeout=5)
    assert "7 credits left" in await world.quota_me(world.other)

    # Someone else: refused, privately, and nothing changes.
    refused = await world.discord.click(world.member, world.channel, mine.original, button_id(mine.original, "Cancel"))
    callback = await refused.wait_for_callback(timeout=3)
    assert callback["type"] == 4 and callback["data"]["flags"] & EPHEMERAL
    assert "Only the member" in callback["data"]["content"]
    assert "queued" in status(mine) and has_button(mine.original, "Cancel")

    # The requester: cancelled, refunded, the button gone.
    cancel = await world.discord.click(world.other, world.channel, mine.original, button_id(mine.original, "Cancel"))
    callback = await cancel.wait_for_callback(timeout=3)
    assert callback["type"] == 7
    assert "Cancelled" in status(mine) and not has_button(mine.original, "Cancel")
    assert "8.5 credits left" in await world.quota_me(world.other)

    # A moderator may cancel someone else's job too.
    by_mod = await world.discord.click(
        world.moderator, world.channel, also_mine.original, button_id(also_mine.original, "Cancel")
    )
    callback = await by_mod.wait_for_callback(timeout=3)
    assert callback["type"] == 7
    assert "Cancelled" in status(also_mine) and not also_mine.original.mentions_would_ping
    assert "10 credits left" in await world.quota_me(world.other)

    await running.wait_for(has_attachments(1), timeout=15)
    await asyncio.sleep(1)  # room for a wrongly started job to reach the generator
    assert prompts(world) == ["running"]
    assert "Cancelled" in status(mine) and "Cancelled" in status(also_mine)
    assert not any(m.attachments for m in mine.messages + also_mine.messages)


@pytest.mark.each_backend
async def test_one_members_burst_does_not_delay_anothers_first_job(world: World) -> None:
    world.onemin.latency = 2  # Alice's first job holds the only slot while everyone else queues
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    burst = []
    for number in range(1, 4):
        burst.append(await world.imagine(prompt=f"alice {number}", quality="low"))
        await burst[-1].wait_for_callback(timeout=3)
    bob = await world.imagine(world.other, prompt="bob 1", quality="low")
    mod = await world.imagine(world.moderator, prompt="mod 1", quality="low")
    world.onemin.latency = 0.2
    # Alice's first job is at the generator; Bob and the moderator each get a turn before Alice's second.
    await bob.wait_for(lambda i: "queued" in status(i), timeout=5)
    await mod.wait_for(lambda i: "queued" in status(i), timeout=5)
    assert "next in line" in status(bob)
    assert "1 ahead" in status(mod)
    for interaction in [*burst, bob, mod]:
        await interaction.wait_for(has_attachments(1), timeout=30)
    assert prompts(world) == ["alice 1", "bob 1", "mod 1", "alice 2", "alice 3"]


@pytest.mark.each_backend
async def test_rate_limit_pauses_the_queue_and_fails_nothing(world: World) -> None:
    await world.start_bot(MAX_CONCURRENT_JOBS="2")
    world.onemin.fail_next("429", retry_after=2)
    first = await world.imagine(prompt="first")
    await wait_until(lambda: len(world.onemin.requests) == 1, timeout=10, what="the first request")
    limited_at = time.monotonic()
    await wait_until(lambda: "no new jobs start" in world.bot.log(), timeout=5, what="the bot to take the 429 in")
    second = await world.imagine(world.other, prompt="second")
    # A slot is free, but the generator asked for a pause: the second job waits in the queue.
    await second.wait_for(lambda i: "queued" in status(i), timeout=5)
    await asyncio.sleep(1.2)
    assert len(world.onemin.requests) == 1, prompts(world)
    await first.wait_for(has_attachments(1), timeout=30)
    await second.wait_for(has_attachments(1), timeout=30)
    assert time.monotonic() - limited_at >= 1.9
    assert sorted(prompts(world)) == ["first", "first", "second"]
    assert [request["answer"] for request in world.onemin.requests].count("429") == 1
    assert "not charged" not in content_of(first) + content_of(second)
    assert "9 credits left" in await world.quota_me()


@pytest.mark.each_backend
async def test_a_job_waiting_out_a_429_shows_cancel_and_cancelling_refunds_it(world: World) -> None:
    await world.start_bot()
    world.onemin.fail_next("429", retry_after=60)
    limited = await world.imagine(world.other, prompt="held back", size="1536x1024")  # 1.5 credits
    await limited.wait_for(lambda i: "slow down" in status(i) and has_button(i.original, "Cancel"), timeout=10)
    assert "8.5 credits left" in await world.quota_me(world.other)

    refused = await world.discord.click(
        world.member, world.channel, limited.original, button_id(limited.original, "Cancel")
    )
    callback = await refused.wait_for_callback(timeout=3)
    assert callback["type"] == 4 and callback["data"]["flags"] & EPHEMERAL and "Only the member" in content_of(refused)

    cancel = await world.discord.click(
        world.other, world.channel, limited.original, button_id(limited.original, "Cancel")
    )
    assert (await cancel.wait_for_callback(timeout=3))["type"] == 7
    assert "Cancelled" in status(limited) and not has_button(limited.original, "Cancel")
    assert "10 credits left" in await world.quota_me(world.other)
    await asyncio.sleep(1)
    assert prompts(world) == ["held back"]  # the one request the generator refused, never sent again
    assert "Cancelled" in status(limited)  # no later status edit undid it


async def test_a_status_edit_already_on_its_way_does_not_undo_a_cancel(world: World) -> None:
    await world.start_bot()
    world.onemin.fail_next("429", retry_after=11)  # the first try waits 11 s (its status edit comes at +5 s)
    world.onemin.fail_next("429", retry_after=60)  # the resend is refused again: a long wait
    job = await world.imagine(world.other, prompt="held back")
    await job.wait_for(lambda i: "slow down" in status(i) and has_button(i.original, "Cancel"), timeout=10)
    # Discord holds the next status edit (the "generating" one when the 11 s are over) for 3 s.
    world.discord.rate_limit_next("PATCH", "/webhooks/", retry_after=3.0)
    await wait_until(lambda: len(world.onemin.requests) == 2, timeout=15, what="the resend")
    await wait_until(lambda: "attempt 2" in world.bot.log(), timeout=5, what="the second 429 taken in")
    # The message still shows the first wait's Cancel button, and the job waits again: Cancel works.
    assert has_button(job.original, "Cancel"), status(job)
    cancel = await world.discord.click(world.other, world.channel, job.original, button_id(job.original, "Cancel"))
    assert (await cancel.wait_for_callback(timeout=3))["type"] == 7
    assert "10 credits left" in await world.quota_me(world.other)
    await asyncio.sleep(4)  # the held "generating" edit has landed by now, and the bot said "Cancelled" again
    assert "Cancelled" in status(job) and not has_button(job.original, "Cancel"), status(job)


async def test_expired_token_delivers_in_the_channel_pinging_only_the_requester(world: World) -> None:
    world.onemin.latency = 1
    await world.start_bot()
    prompt = "a parade @everyone <@&223456789012345678> " + world.other.mention
    interaction = await world.imagine(prompt=prompt, count=2, quality="low")
    await wait_until(lambda: len(world.onemin.requests) == 1, timeout=10, what="the generation request")
    interaction.expire_token()

    def posted() -> list[FakeMessage]:
        return [m for m in world.discord.channel_messages(world.channel) if m.attachments]

    await world.discord.wait_for(lambda: bool(posted()), timeout=20, what="the images in the channel")
    messages = world.discord.channel_messages(world.channel)
    assert sum(len(message.attachments) for message in messages) == 2
    lead = messages[0]
    assert world.member.mention in lead.content
    assert lead.mentions_would_ping == {world.member.mention}
    assert lead.allowed_mentions is not None
    assert not lead.allowed_mentions.get("parse")
    assert [str(user) for user in lead.allowed_mentions.get("users", [])] == [str(world.member.id)]
    assert all(not message.mentions_would_ping for message in messages[1:])
    assert has_button(lead, "Re-roll") and has_button(lead, "Delete")
    # The old status ("Generating ...") could no longer be edited on the token: it was edited as a channel message.
    link = f"https://discord.com/channels/{world.guild.id}/{world.channel.id}/{lead.id}"
    await wait_until(lambda: link in status(interaction), timeout=5, what="the old status pointing at the images")
    assert "posted in the channel" in status(interaction) and not interaction.original.mentions_would_ping
    assert "9.5 credits left" in await world.quota_me()  # delivered, so charged
    drop_expected_errors(world, "50027")


async def test_expired_token_and_closed_channel_refund_and_tell_by_dm(world: World) -> None:
    world.onemin.latency = 1
    locked = world.discord.add_channel(world.guild, name="read-only", bot_can_send=False)
    await world.start_bot()
    interaction = await world.discord.invoke(world.member, locked, "imagine", options={"prompt": "a quiet lake"})
    await wait_until(lambda: len(world.onemin.requests) == 1, timeout=10, what="the generation request")
    interaction.expire_token()
    await world.discord.wait_for(lambda: bool(world.discord.dm_messages(world.member)), timeout=20, what="a DM")
    dm = world.discord.dm_messages(world.member)[0]
    assert "refunded" in dm.content
    assert not dm.mentions_would_ping
    assert world.discord.channel_messages(locked) == []
    assert "10 credits left" in await world.quota_me()
    drop_expected_errors(world, "50027", "50013")


async def test_refused_first_response_of_a_started_job_still_delivers_in_the_channel(world: World) -> None:
    # The job went to the generator beside its first response, so it is paid for: the images must not be lost.
    world.onemin.latency = 0.5
    await world.start_bot()
    world.discord.first_response_deadline = 0.0  # Discord answers 10062 to every first response
    interaction = await world.imagine(prompt="a windmill in the rain", quality="low")

    await world.discord.wait_for(
        lambda: any(m.attachments for m in world.discord.channel_messages(world.channel)),
        timeout=20,
        what="the images in the channel",
    )
    lead = world.discord.channel_messages(world.channel)[0]
    assert lead.mentions_would_ping == {world.member.mention}
    assert interaction.callbacks == [] and len(world.onemin.requests) == 1
    world.discord.first_response_deadline = 3.0
    assert "9.75 credits left" in await world.quota_me()  # delivered, so charged
    drop_expected_errors(world, "10062", "unanswered")


async def test_a_result_ready_before_discord_took_the_first_response_still_replaces_it(world: World) -> None:
    # A job with a free slot goes to the generator beside its first response. When the generator answers before
    # Discord has applied that response, the result must wait for it: "@original" does not exist until then
    # (an edit would get 10015 and the images would go to the channel instead).
    world.onemin.latency = 0
    await world.start_bot()
    world.discord.callback_delay = 1.5
    interaction = await world.imagine(prompt="a quick sketch", quality="low")

    await interaction.wait_for(has_attachments(1), timeout=15)
    world.discord.callback_delay = 0.0
    assert interaction.responded_at is not None
    took_effect = interaction.responded_at + 1.5
    upload = next(r for r in world.discord.requests if r.method == "PATCH" and interaction.token in r.path)
    assert upload.time >= took_effect  # it waited for the status message to exist
    assert world.onemin.requests[0]["answer"] is not None and len(world.onemin.requests) == 1
    assert world.discord.channel_messages(world.channel) == []
    assert "9.75 credits left" in await world.quota_me()


async def test_a_request_over_quota_gives_back_the_slot_it_would_have_taken(world: World) -> None:
    # A job with a free slot takes its place before its cost is reserved; a refusal must give the place back.
    world.onemin.latency = 0.2
    await world.start_bot(MAX_CONCURRENT_JOBS="1", QUOTA_DEFAULT_CREDITS="2")
    refused = await world.imagine(prompt="too big", size="2048x2048", quality="medium")  # 4 credits
    assert (await refused.wait_for_callback(timeout=3))["data"]["flags"] & EPHEMERAL

    accepted = await world.imagine(world.other, prompt="small", quality="low")
    callback = await accepted.wait_for_callback(timeout=3)
    assert "queued" not in callback["data"]["content"]  # the only slot was free for it
    await accepted.wait_for(has_attachments(1), timeout=15)
    assert prompts(world) == ["small"]


async def test_refused_first_response_of_a_queued_job_refunds_it_and_never_generates(world: World) -> None:
    world.onemin.latency = 3
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    running = await world.imagine(prompt="running", quality="low")
    await wait_until(lambda: prompts(world) == ["running"], timeout=10, what="the first generation")
    world.discord.first_response_deadline = 0.0
    waiting = await world.imagine(world.other, prompt="never made", size="1536x1024")

    await running.wait_for(has_attachments(1), timeout=20)
    await asyncio.sleep(1.0)  # the slot is free now: a job still queued would have started
    assert prompts(world) == ["running"]
    assert waiting.callbacks == []
    world.discord.first_response_deadline = 3.0
    assert "10 credits left" in await world.quota_me(world.other)
    drop_expected_errors(world, "10062", "unanswered")


@pytest.mark.each_backend
async def test_queued_job_survives_a_restart_and_cancel_still_works(world: World) -> None:
    world.onemin.latency = 60
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    interrupted = await world.imagine(prompt="cut short")
    await wait_until(lambda: prompts(world) == ["cut short"], timeout=10, what="the first generation")
    survivor = await world.imagine(world.other, prompt="survivor")
    doomed = await world.imagine(world.moderator, prompt="cancelled after the restart")
    await doomed.wait_for(lambda i: has_button(i.original, "Cancel"), timeout=5)
    cancel_id = button_id(doomed.original, "Cancel")

    world.onemin.latency = 3
    await world.restart_bot(crash=True)
    await wait_until(lambda: "survivor" in prompts(world), timeout=15, what="the queued job to run")
    click = await world.discord.click(world.moderator, world.channel, doomed.original, cancel_id)
    callback = await click.wait_for_callback(timeout=3)
    assert callback["type"] == 7, callback
    assert "Cancelled" in status(doomed)

    await survivor.wait_for(has_attachments(1), timeout=20)
    await interrupted.wait_for(lambda i: "restarted" in content_of(i), timeout=10)
    await asyncio.sleep(1)
    assert prompts(world) == ["cut short", "survivor"]
    assert "10 credits left" in await world.quota_me()  # the interrupted job was refunded
    assert "9 credits left" in await world.quota_me(world.other)
    assert "10 credits left" in await world.quota_me(world.moderator)


@pytest.mark.each_backend
async def test_after_a_crash_queued_jobs_keep_their_places_in_the_rotation(world: World) -> None:
    world.onemin.latency = 60
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    await world.imagine(prompt="alice 1", quality="low")
    await wait_until(lambda: prompts(world) == ["alice 1"], timeout=10, what="the first generation")
    alice_2 = await world.imagine(prompt="alice 2", quality="low")
    await alice_2.wait_for_callback(timeout=3)
    bob_1 = await world.imagine(world.other, prompt="bob 1", quality="low")
    # Alice was served (her first job is running): bob's job goes first.
    await bob_1.wait_for(lambda i: "next in line" in status(i), timeout=5)
    await alice_2.wait_for(lambda i: "1 ahead" in status(i), timeout=10)

    world.onemin.latency = 1
    await world.restart_bot(crash=True)
    await alice_2.wait_for(has_attachments(1), timeout=30)
    await bob_1.wait_for(has_attachments(1), timeout=30)
    assert prompts(world) == ["alice 1", "bob 1", "alice 2"]


@pytest.mark.each_backend
async def test_a_queued_job_that_outlives_its_token_and_a_restart_settles_its_old_status(world: World) -> None:
    world.onemin.latency = 60
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    await world.imagine(prompt="holds the only slot")
    await wait_until(lambda: len(prompts(world)) == 1, timeout=10, what="the first generation")
    waiting = await world.imagine(world.other, prompt="waits its turn")
    await waiting.wait_for(lambda i: has_button(i.original, "Cancel"), timeout=5)
    assert "queued" in status(waiting)

    # The bot restarts (the first job is lost and refunded) and the waiting job's token dies before its turn: the
    # id of its status message was kept in the job table, so the status is settled as a channel message.
    world.onemin.latency = 0.5
    waiting.expire_token()
    # Written once the job has waited QUEUED_STATUS_KEEP_AFTER (5 s).
    await wait_until(lambda: status_message_recorded(world, waiting), timeout=15, what="the status message's id")
    await world.restart_bot(crash=True)
    await world.discord.wait_for(
        lambda: any(m.attachments for m in world.discord.channel_messages(world.channel)),
        timeout=20,
        what="the images in the channel",
    )
    lead = next(m for m in world.discord.channel_messages(world.channel) if m.attachments)
    assert lead.mentions_would_ping == {world.other.mention}
    await wait_until(lambda: "posted in the channel" in status(waiting), timeout=5, what="the settled status")
    assert str(lead.id) in status(waiting)
    assert not has_button(waiting.original, "Cancel")  # nothing left to cancel
    drop_expected_errors(world, "50027")


async def test_a_failure_after_the_token_died_is_told_in_the_channel_and_settles_the_old_status(world: World) -> None:
    world.onemin.latency = 1
    await world.start_bot()
    world.onemin.fail_next("moderation")
    interaction = await world.imagine(prompt="a storm over the sea")
    await wait_until(lambda: len(world.onemin.requests) == 1, timeout=10, what="the generation request")
    interaction.expire_token()

    await world.discord.wait_for(
        lambda: bool(world.discord.channel_messages(world.channel)), timeout=20, what="the notice in the channel"
    )
    notice = world.discord.channel_messages(world.channel)[0]
    assert "not charged" in notice.content and notice.mentions_would_ping == {world.member.mention}
    await wait_until(lambda: "not charged" in status(interaction), timeout=5, what="the settled status")
    assert not interaction.original.mentions_would_ping
    assert "10 credits left" in await world.quota_me()
    drop_expected_errors(world, "50027")


async def test_a_position_edit_held_by_a_429_does_not_land_over_the_settled_status(
    world: World,
) -> None:
    """Past its token, a queued job's status is edited as a channel message, through the bot's REST client, where
    two edits of one message can overtake each other. A queue-position edit that Discord answers with a 429 would be
    sent again by discord.py after the job was delivered and its status settled, showing "queued, next in line" and
    a Cancel button for good: the result calls it off."""
    carol = world.discord.add_member(world.guild, username="carol")
    world.onemin.latency = 3
    await world.start_bot(MAX_CONCURRENT_JOBS="1")
    await world.imagine(prompt="alice runs", quality="low")
    await wait_until(lambda: prompts(world) == ["alice runs"], timeout=10, what="alice's generation")
    world.onemin.latency = 4  # the moderator's job
    await world.imagine(world.moderator, prompt="mod waits first", quality="low")
    await world.imagine(carol, prompt="carol waits second", quality="low")
    bob = await world.imagine(world.other, prompt="bob waits third", quality="low")
    await bob.wait_for(lambda i: "2 ahead" in status(i) and has_button(i.original, "Cancel"), timeout=5)
    bob.expire_token()  # bob's job has waited past its token's 15 minutes: its status is a channel message now

    def channel_edits(code: int) -> int:
        return sum(
            1
            for r in world.discord.requests
            if r.method == "PATCH" and r.path.startswith("/channels/") and r.status == code
        )

    await wait_until(lambda: len(world.onemin.requests) == 2, timeout=10, what="the moderator's generation")
    world.onemin.latency = 5  # carol's job: still running when bob's next position edit goes (5 s after the last)
    await wait_until(lambda: channel_edits(200) == 1, timeout=5, what="bob's first position edit (1 ahead)")
    # Bob's next position edit (next in line, when carol's job starts) meets a 429.
    world.discord.rate_limit_next("PATCH", "/channels/", retry_after=6.0)
    await wait_until(lambda: len(world.onemin.requests) == 3, timeout=10, what="carol's generation")
    world.onemin.latency = 0.2  # bob's job is quick
    await wait_until(lambda: channel_edits(429) == 1, timeout=5, what="bob's position edit rate-limited")
    # Bob's job starts, is delivered in the channel (pinging bob), and his old status is settled with a link.
    await wait_until(job_is(world, bob, "delivered"), timeout=15, what="bob's job delivered")
    await asyncio.sleep(0.5)
    assert "queued" not in status(bob), status(bob)
    # The held position edit is called off when the result comes: past its 6 s it has not landed over the link.
    await asyncio.sleep(6.5)
    world.discord.protocol_errors.clear()  # bob's expired token refusing an edit: expected
    assert "queued" not in status(bob) and not has_button(bob.original, "Cancel"), status(bob)


async def test_a_stop_waits_for_a_cancels_answer_held_by_discord(world: World) -> None:
    """SIGTERM arrives after a Cancel was written (refunded) but before its status edit reached Discord (held by a
    429): the stop waits for it, as for a result being posted, so the status does not say "queued" with a Cancel
    button for good."""
    queued = await one_running_one_queued(world, quality="low")
    world.discord.rate_limit_next("POST", "/interactions/", retry_after=2.0)  # the click's answer waits 2 s
    await world.discord.click(world.other, world.channel, queued.original, button_id(queued.original, "Cancel"))
    await wait_until(job_is(world, queued, "cancelled"), timeout=5, what="the cancel written")
    await world.restart_bot(crash=False)  # docker stop / a deploy
    await asyncio.sleep(3)
    assert "10 credits left" in await world.quota_me(world.other)  # refunded: the job is over
    world.discord.protocol_errors.clear()  # the click itself went unanswered ("This interaction failed")
    assert "Cancelled" in status(queued) and not has_button(queued.original, "Cancel"), status(queued)


async def test_a_stop_waits_for_a_cancel_slow_to_write_and_its_answer(world: World) -> None:
    """The same with a slow database instead of a slow Discord: the Cancel is acknowledged (deferred update) and
    its write waits for the database; the bot is stopped meanwhile; the stop lets the write and the status edit
    finish."""
    queued = await one_running_one_queued(world, quality="low")
    with database_locked(world):
        cancel_id = button_id(queued.original, "Cancel")
        click = await world.discord.click(world.other, world.channel, queued.original, cancel_id)
        assert (await click.wait_for_callback(timeout=3))["type"] == 6  # deferred: the write waits for the lock
        world.bot.process.send_signal(signal.SIGTERM)  # docker stop / a deploy
        await wait_until(lambda: "stopping" in world.bot.log(), timeout=5, what="the stop begun")
        await asyncio.sleep(0.5)
    await world.bot.process.wait()
    assert await job_state(world, queued) == "cancelled"
    await world.restart_bot(crash=True)
    await asyncio.sleep(2)
    assert "10 credits left" in await world.quota_me(world.other)  # refunded: the job is over
    assert "Cancelled" in status(queued) and not has_button(queued.original, "Cancel"), status(queued)
