"""``/imagine`` end to end: gateway event in, callbacks and multipart uploads out, through the real bot process."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from tests.e2e.harness import World, button_id, content_of, database_locked, has_attachments, job_is, wait_until
from tests.e2e.test_quota_commands import say
from tests.fakes.discord import FakeInteraction

LONG_PROMPT_UNIT = "**bold** _it_ `code` @everyone @here <@123456789012345678> <@&223456789012345678> ||spoiler|| "


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.each_backend
async def test_happy_path_two_images_arrive_with_the_asked_size(world: World) -> None:
    await world.start_bot()
    interaction = await world.imagine(prompt="a lighthouse at dusk", size="1536x1024", count=2)
    callback = await interaction.wait_for_callback(timeout=3)
    # Within 3 s, public, and already the job's status: it went to the generator at once.
    assert callback["type"] == 4 and not interaction.ephemeral
    assert "Generating" in callback["data"]["content"] and callback["data"]["allowed_mentions"] == {"parse": []}
    await interaction.wait_for(has_attachments(2), timeout=30)

    files = [attachment for message in interaction.messages for attachment in message.attachments]
    assert len(files) == 2
    for attachment in files:
        image = decode(attachment.data)
        assert image.size == (1536, 1024)
        assert image.format == "PNG"
        assert attachment.description and "lighthouse" in attachment.description
    assert len(world.onemin.requests) == 1
    sent = world.onemin.requests[0]["body"]["promptObject"]
    assert sent == {
        "prompt": "a lighthouse at dusk",
        "size": "1536x1024",
        "quality": "medium",
        "n": 2,
        "output_format": "png",
    }
    shown = content_of(interaction)
    assert "1536x1024" in shown and "3 credits" in shown  # 2 x 1.5 credits
    assert all(not message.mentions_would_ping for message in interaction.messages)
    assert "7 credits left" in await world.quota_me()


async def test_four_images_are_all_fetched_the_right_way(world: World) -> None:
    await world.start_bot()
    interaction = await world.imagine(prompt="four kittens", count=4, quality="low")
    await interaction.wait_for(has_attachments(4), timeout=30)
    images = [decode(a.data) for m in interaction.messages for a in m.attachments]
    assert [image.size for image in images] == [(1024, 1024)] * 4
    assert len({image.tobytes()[:4096] for image in images}) == 4  # four distinct images, none repeated
    routes = [route for route, _path, status in world.onemin.download_routes if status == 200]
    assert sorted(routes) == ["asset", "asset", "asset", "presigned"]


@pytest.mark.each_backend
async def test_images_that_could_not_be_fetched_are_linked_and_not_charged(world: World) -> None:
    await world.start_bot()
    world.onemin.fail_next("asset-404")  # the asset host has none of the result's images; image 1 has a presigned URL
    interaction = await world.imagine(prompt="three foxes", count=3)
    await interaction.wait_for(has_attachments(1), timeout=30)
    await wait_until(lambda: "job 1 delivered" in world.bot.log(), timeout=5, what="the delivery recorded")
    result = interaction.original
    assert result is not None and len(result.attachments) == 1
    assert "Image 2: http" in (result.content or "") and "Image 3: http" in (result.content or "")
    [notes] = [field["value"] for field in result.embeds[0]["fields"] if field["name"] == "Notes"]
    assert "Of the 3 asked for, 2 images could only be linked: 2 credits refunded." in notes, notes
    assert "Image 2: could not be downloaded: link above" in notes, notes
    assert "9 credits left" in await world.quota_me()  # one image attached, one credit
    view = await say(world, world.moderator, "quota", "view", member=world.member)
    assert "delivered · 1 credit (2 credits of 3 credits refunded)" in view, view


async def test_longest_prompt_is_sent_whole_and_pings_nobody(world: World) -> None:
    await world.start_bot()
    prompt = (LONG_PROMPT_UNIT * 100)[:4000]
    interaction = await world.imagine(prompt=prompt)
    await interaction.wait_for(has_attachments(1), timeout=30)
    assert world.onemin.requests[0]["body"]["promptObject"]["prompt"] == prompt.strip()
    for message in interaction.messages:
        assert not message.mentions_would_ping, message.mentions_would_ping
        assert message.allowed_mentions is not None
        assert len(message.content or "") <= 2000
        assert sum(len(e.get("description") or "") for e in message.embeds) <= 4096


async def test_bad_inputs_are_refused_ephemerally_and_cost_nothing(world: World) -> None:
    await world.start_bot()
    cases = [
        ({"prompt": "x", "size": "1000x1000"}, ["992x992", "1008x1008"]),
        ({"prompt": "x", "size": "4096x1024"}, ["3840"]),
        ({"prompt": "x", "size": "3840x864"}, ["3"]),
        ({"prompt": "x", "size": "banana"}, ["WxH"]),
        ({"prompt": "x", "compression": 50}, ["jpeg or webp"]),
        ({"prompt": "   "}, ["empty"]),
    ]
    for options, words in cases:
        interaction = await world.imagine(**options)
        callback = await interaction.wait_for_callback(timeout=3)
        assert callback["type"] == 4, options
        assert callback["data"]["flags"] & 64, options
        for word in words:
            assert word in callback["data"]["content"], (options, callback["data"]["content"])
    assert world.onemin.requests == []
    assert "10 credits left" in await world.quota_me()


@pytest.mark.each_backend
async def test_over_quota_is_refused_with_cost_and_what_remains(world: World) -> None:
    await world.start_bot(QUOTA_DEFAULT_CREDITS="2")
    interaction = await world.imagine(prompt="big", size="2048x2048", quality="medium")  # 4 credits
    callback = await interaction.wait_for_callback(timeout=3)
    assert callback["type"] == 4 and callback["data"]["flags"] & 64
    text = callback["data"]["content"]
    assert "4 credits" in text and "2 credits left" in text and "<t:" in text
    assert world.onemin.requests == []


@pytest.mark.each_backend
async def test_generator_failure_is_explained_and_refunded(world: World) -> None:
    await world.start_bot()
    world.onemin.fail_next("500")
    interaction = await world.imagine(prompt="a storm", count=3)
    await interaction.wait_for(lambda i: "not charged" in content_of(i), timeout=30)
    assert "10 credits left" in await world.quota_me()


async def test_safety_block_is_told_plainly(world: World) -> None:
    await world.start_bot()
    world.onemin.fail_next("moderation")
    interaction = await world.imagine(prompt="something the safety system dislikes")
    await interaction.wait_for(lambda i: "not charged" in content_of(i), timeout=30)
    assert "safety" in content_of(interaction).lower()


async def test_wrong_api_key_tells_the_member_to_tell_a_moderator(world: World) -> None:
    await world.start_bot(ONEMIN_API_KEY="wrong-key-also-secret")
    interaction = await world.imagine(prompt="anything")
    await interaction.wait_for(lambda i: "not charged" in content_of(i), timeout=30)
    text = content_of(interaction)
    assert "refused the bot's API key" in text and "not your quota" in text and "moderator" in text
    assert "wrong-key-also-secret" not in text and "wrong-key-also-secret" not in world.bot.log()
    assert "10 credits left" in await world.quota_me()
    assert world.onemin.rejected == ["missing or wrong API-KEY header"]
    world.onemin.rejected.clear()


async def test_rate_limit_delays_the_job_instead_of_failing_it(world: World) -> None:
    await world.start_bot()
    world.onemin.fail_next("429", retry_after=1)
    interaction = await world.imagine(prompt="patience")
    await interaction.wait_for(has_attachments(1), timeout=30)
    assert len(world.onemin.requests) == 2  # the 429'd request, then the one that worked


async def test_a_status_message_deleted_while_generating_gets_the_result_posted_anew(world: World) -> None:
    world.onemin.latency = 2
    await world.start_bot()
    interaction = await world.imagine(prompt="a lighthouse", quality="low")
    await wait_until(lambda: len(world.onemin.requests) == 1, timeout=10, what="the generation request")
    await wait_until(
        lambda: interaction.original is not None and "enerating" in (interaction.original.content or ""),
        timeout=10,
        what="the generating status",
    )
    world.discord.delete_message(interaction.original)  # a moderator tidies the channel up
    await interaction.wait_for(has_attachments(1), timeout=30)
    result = interaction.followups[0]
    assert button_id(result, "Re-roll") and button_id(result, "Delete")
    assert "not charged" not in content_of(interaction)
    assert "9.75 credits left" in await world.quota_me()  # delivered, so charged
    world.discord.protocol_errors[:] = [e for e in world.discord.protocol_errors if not e.startswith("10008")]


async def test_an_image_over_the_upload_limit_is_reencoded_to_fit(world: World) -> None:
    world.guild.attachment_size_limit = 1024 * 1024
    world.onemin.noisy = True  # incompressible: a 1024x1024 PNG is about 3 MB
    await world.start_bot()
    interaction = await world.imagine(prompt="static")
    await interaction.wait_for(has_attachments(1), timeout=60)
    attachment = interaction.messages[0].attachments[0]
    assert attachment.size <= 1024 * 1024
    image = decode(attachment.data)
    assert image.size == (1024, 1024) and image.format in ("JPEG", "WEBP")
    assert "re-encoded" in content_of(interaction).lower()


@pytest.mark.each_backend
async def test_a_restart_mid_job_refunds_and_tells_the_member(world: World) -> None:
    world.onemin.latency = 60
    await world.start_bot()
    interaction = await world.imagine(prompt="slow masterpiece", count=2)
    await interaction.wait_for_callback(timeout=3)
    await wait_until(lambda: len(world.onemin.requests) == 1, timeout=15, what="the generation request")
    await world.restart_bot(crash=True)
    await interaction.wait_for(lambda i: "restarted" in content_of(i), timeout=30)
    assert any("restarted" in (message.content or "") for message in interaction.followups)
    assert "10 credits left" in await world.quota_me()


@pytest.mark.each_backend
async def test_a_result_discord_refuses_on_the_token_goes_to_the_channel_or_is_told_and_refunded(
    world: World,
) -> None:
    await world.start_bot()
    # The upload on the interaction is refused for a reason that is not the token's: the channel takes it.
    world.discord.fail_next("PATCH", "/webhooks/", status=413, code=40005, message="Request entity too large")
    interaction = await world.imagine(prompt="a red barn", quality="low")
    await world.discord.wait_for(
        lambda: any(m.attachments for m in world.discord.channel_messages(world.channel)), timeout=20, what="post"
    )
    [posted] = [m for m in world.discord.channel_messages(world.channel) if m.attachments]
    assert posted.mentions_would_ping == {world.member.mention}  # the requester alone, as in the 15-minute fallback
    await wait_until(lambda: "job 1 delivered" in world.bot.log(), timeout=5, what="the delivery recorded")
    assert "9.75 credits left" in await world.quota_me()
    await interaction.wait_for(lambda i: "posted in the channel" in content_of(i), timeout=5)

    # Refused on the token and in the channel: the member is told the images were made, and refunded.
    world.discord.fail_next("PATCH", "/webhooks/", status=413, code=40005, message="Request entity too large")
    world.discord.fail_next("POST", "/channels/", status=413, code=40005, message="Request entity too large")
    refused = await world.imagine(prompt="a blue barn", quality="low")
    await refused.wait_for(lambda i: "would not take the upload" in content_of(i), timeout=20)
    assert "made" in content_of(refused) and "0.25 credits refunded" in content_of(refused)
    await wait_until(job_is(world, refused, "failed"), timeout=5, what="the job settled")
    assert "9.75 credits left" in await world.quota_me()
    world.discord.protocol_errors[:] = [e for e in world.discord.protocol_errors if not e.startswith("40005")]


async def test_a_result_refused_on_the_token_in_a_channel_the_bot_cannot_post_in_is_told_on_the_token(
    world: World,
) -> None:
    await world.start_bot()
    world.channel = world.discord.add_channel(world.guild, name="locked", bot_can_send=False)
    world.member.accepts_dms = False
    world.discord.fail_next("PATCH", "/webhooks/", status=413, code=40005, message="Request entity too large")
    interaction = await world.imagine(prompt="a red barn", quality="low")
    await interaction.wait_for(lambda i: "would not take the upload" in content_of(i), timeout=20)
    assert "Request entity too large" in content_of(interaction)  # the upload's refusal, not the channel's 403
    await wait_until(job_is(world, interaction, "failed"), timeout=5, what="the job settled")
    assert "10 credits left" in await world.quota_me()
    world.discord.protocol_errors[:] = [
        e for e in world.discord.protocol_errors if not e.startswith(("40005", "50001", "50013"))
    ]


@pytest.mark.each_backend
async def test_a_crash_after_part_of_a_result_was_posted_leaves_that_part_and_refunds(world: World) -> None:
    await world.start_bot()
    world.onemin.fail_next("asset-404")  # image 2 can only be linked: the message carries 1 of 2 images
    world.discord.hold_answer_next("PATCH", "/webhooks/", seconds=30)
    interaction = await world.imagine(prompt="two lighthouses", count=2, quality="low")
    await interaction.wait_for(has_attachments(1), timeout=30)
    await world.restart_bot(crash=True)
    await interaction.wait_for(lambda i: any("restarted" in (m.content or "") for m in i.followups), timeout=20)
    result = interaction.original
    assert result is not None and len(result.attachments) == 1 and "Image 2: http" in (result.content or "")
    assert "Interrupted" not in (result.content or "")  # what arrived stays as it was
    assert any("while your images were being posted" in (m.content or "") for m in interaction.followups)
    assert "10 credits left" in await world.quota_me()  # not all of it arrived: refunded, as the followup says


@pytest.mark.each_backend
async def test_a_crash_after_the_result_was_posted_but_before_it_was_recorded_charges_it(world: World) -> None:
    await world.start_bot()
    log_channel = world.discord.add_channel(world.guild, name="image-log")
    await say(world, world.moderator, "settings", "log-channel", channel=log_channel)
    # Discord takes the result's upload but its answer never reaches the bot: the bot dies waiting for it.
    world.discord.hold_answer_next("PATCH", "/webhooks/", seconds=30)
    interaction = await world.imagine(prompt="a lighthouse", count=2, quality="low")
    await interaction.wait_for(has_attachments(2), timeout=30)
    await world.restart_bot(crash=True)
    await wait_until(lambda: "recorded as delivered" in world.bot.log(), timeout=20, what="the recovery")
    assert "9.5 credits left" in await world.quota_me()  # the member has the images: they are charged
    await asyncio.sleep(0.5)
    assert "restarted" not in content_of(interaction) and not interaction.followups
    assert sum(len(m.attachments) for m in interaction.messages) == 2
    # Like any delivered result, it is in the server's log channel.
    await world.discord.wait_for(
        lambda: any("a lighthouse" in (m.content or "") for m in world.discord.channel_messages(log_channel)),
        timeout=10,
        what="the log channel entry",
    )


async def deferred_in_time(interaction: FakeInteraction) -> None:
    """Discord got a public deferral ("thinking...") for the interaction within its 3 s."""
    callback = await interaction.wait_for_callback(timeout=2.9)
    assert callback["type"] == 5 and not (callback.get("data") or {}).get("flags", 0) & 64, callback


async def test_a_request_slow_to_write_is_deferred_in_time_then_shows_its_status(world: World) -> None:
    await world.start_bot()
    await world.quota_me()  # the settings are read and cached; only the write waits
    with database_locked(world):
        interaction = await world.imagine(prompt="a patient lighthouse", quality="low")
        await deferred_in_time(interaction)  # though not written yet
        await asyncio.sleep(1.0)
    await interaction.wait_for(has_attachments(1), timeout=30)
    assert "9.75 credits left" in await world.quota_me()


async def test_a_burst_while_the_database_is_locked_is_answered_in_time_and_delivered(world: World) -> None:
    members = [world.discord.add_member(world.guild, username=f"member{n}") for n in range(60)]
    await world.start_bot()
    await world.quota_me()
    with database_locked(world):
        interactions = await asyncio.gather(
            *(world.imagine(member, prompt=f"burst {n}", quality="low") for n, member in enumerate(members))
        )
        callbacks = await asyncio.gather(*(i.wait_for_callback(timeout=2.95) for i in interactions))
        assert {callback["type"] for callback in callbacks} == {5}  # every one deferred within Discord's 3 s
        await asyncio.sleep(1.0)
    for interaction in interactions:
        await interaction.wait_for(has_attachments(1), timeout=60)
    assert not world.discord.protocol_errors, world.discord.protocol_errors


async def test_a_burst_larger_than_the_gateway_readers_pace_is_answered_at_once_and_delivered(world: World) -> None:
    # More interactions at once than the reader lets wait for an answer (cogs/pacing.py): it waits for the bot.
    members = [world.discord.add_member(world.guild, username=f"member{n}") for n in range(60)]
    world.onemin.latency = 0.5
    await world.start_bot()
    interactions = await asyncio.gather(
        *(world.imagine(member, prompt=f"burst {n}", quality="low") for n, member in enumerate(members))
    )
    callbacks = await asyncio.gather(*(i.wait_for_callback(timeout=2.95) for i in interactions))
    assert {callback["type"] for callback in callbacks} == {4}  # every one answered with its status, none deferred
    for interaction in interactions:
        await interaction.wait_for(has_attachments(1), timeout=60)
    assert len(world.onemin.requests) == 60
    assert not world.discord.protocol_errors, world.discord.protocol_errors


async def test_a_refusal_after_a_deferral_is_private_and_leaves_no_placeholder(world: World) -> None:
    await world.start_bot()
    await say(world, world.moderator, "quota", "set", member=world.member, credits=0)
    with database_locked(world):
        interaction = await world.imagine(prompt="a patient lighthouse", quality="low")
        await deferred_in_time(interaction)
        await asyncio.sleep(1.0)
    await interaction.wait_for(lambda i: any(m.flags & 64 for m in i.followups), timeout=10)
    [refusal] = interaction.followups
    assert "0 credits left" in (refusal.content or "")
    assert interaction.original is None or interaction.original.deleted
    assert not world.onemin.requests


async def test_a_refusal_after_a_deferral_stays_private_when_the_placeholder_cannot_be_removed(world: World) -> None:
    await world.start_bot()
    await say(world, world.moderator, "quota", "set", member=world.member, credits=0)
    with database_locked(world):
        interaction = await world.imagine(prompt="a patient lighthouse", quality="low")
        await deferred_in_time(interaction)
        # Removing the placeholder fails (any refusal; a 5xx would be tried again for ~16 s first).
        world.discord.fail_next("DELETE", "/webhooks/", status=400, code=0, message="400: Bad Request")
        await asyncio.sleep(1.0)
    await interaction.wait_for(lambda i: any(m.flags & 64 for m in i.followups), timeout=30)
    assert "0 credits left" in interaction.followups[-1].content
    original = interaction.original
    assert original is not None and "credits" not in (original.content or ""), original.content  # not public


async def test_a_store_failure_after_a_deferral_is_told_privately_on_a_button_too(world: World) -> None:
    await world.start_bot()
    first = await world.imagine(prompt="a red fox", quality="low")
    await first.wait_for(has_attachments(1), timeout=30)
    await world.quota_me(world.other)
    with database_locked(world):
        click = await world.discord.click(
            world.other, world.channel, first.original, button_id(first.original, "Re-roll")
        )
        await deferred_in_time(click)
        # Held until the bot gives up (its 5 s busy timeout, counted from whenever its write began: later on a
        # busy machine), so that the reservation fails whatever the machine's speed.
        await click.wait_for(lambda i: any(m.flags & 64 for m in i.followups), timeout=20)
    assert "nothing was charged" in click.followups[0].content
    assert click.original is None or click.original.deleted  # no public "thinking..." left behind
    assert "10 credits left" in await world.quota_me(world.other)


async def test_a_request_from_another_server_waiting_behind_a_slow_write_is_answered_in_time(world: World) -> None:
    guild = world.discord.add_guild(name="Second Server")
    channel = world.discord.add_channel(guild, name="art")
    carol = world.discord.add_member(guild, username="carol")
    await world.start_bot(DISCORD_GUILD_ID="")  # global commands, in both servers
    await world.quota_me()
    with database_locked(world):
        first = await world.imagine(prompt="a patient lighthouse", quality="low")
        await asyncio.sleep(0.3)  # its write waits for the file; the second server's settings read waits behind it
        second = await world.discord.invoke(carol, channel, "imagine", options={"prompt": "a fox", "quality": "low"})
        await first.wait_for_callback(timeout=2.9)
        await deferred_in_time(second)
        await asyncio.sleep(1.0)
    for interaction in (first, second):
        await interaction.wait_for(has_attachments(1), timeout=30)


async def test_a_placeholder_that_cannot_be_replaced_is_removed_and_the_result_posted_anyway(world: World) -> None:
    await world.start_bot()
    await world.quota_me()
    with database_locked(world):
        interaction = await world.imagine(prompt="a patient lighthouse", quality="low")
        await deferred_in_time(interaction)
        # A moderator deletes the "thinking..." placeholder meanwhile: its edit finds no message.
        world.discord.fail_next("PATCH", "/webhooks/", status=404, code=10008, message="Unknown Message")
        await asyncio.sleep(1.0)

    def posted() -> bool:
        return any(message.attachments for message in world.discord.channel_messages(world.channel))

    await wait_until(posted, timeout=30, what="the result in the channel")
    assert interaction.original is None or interaction.original.deleted  # no public "thinking..." left behind


async def test_discords_rate_limits_delay_the_result_but_lose_nothing(world: World) -> None:
    await world.start_bot()
    # Discord answers 429 (with retry_after) to the bot's next two webhook edits: the result's upload.
    world.discord.rate_limit_next("PATCH", "/webhooks/", times=2, retry_after=0.3)
    interaction = await world.imagine(prompt="a patient heron", quality="low")
    await interaction.wait_for(has_attachments(1), timeout=30)
    edits = [r for r in world.discord.requests if r.method == "PATCH" and r.route and r.route.startswith("/webhooks/")]
    assert [r.status for r in edits[:3]] == [429, 429, 200]  # sent again, files and all, after each wait
    assert edits[2].time - edits[0].time >= 0.55
    assert "9.75 credits left" in await world.quota_me()  # delivered, so charged


async def test_a_result_posted_before_a_crash_keeps_its_buttons_when_discord_cannot_show_it(world: World) -> None:
    """A crash between posting a result and recording it: at the next start the bot asks Discord whether the result
    is there. If that GET fails for 10 s (Discord 5xx), the job is refunded (the documented choice when it cannot
    tell) and the member told; the status's text says so, but a result there keeps its image and its buttons."""
    await world.start_bot()
    world.discord.hold_answer_next("PATCH", "/webhooks/", seconds=30)  # the upload is taken, its answer never comes
    interaction = await world.imagine(prompt="a lighthouse", quality="low")
    await interaction.wait_for(lambda i: bool(i.original and i.original.attachments), timeout=30)
    for _ in range(5):  # discord.py tries a 5xx five times, 1 + 3 + 5 + 7 s apart: past the 10 s check
        world.discord.fail_next("GET", "/webhooks/", status=503, message="503: Service Unavailable")
    await world.restart_bot(crash=True)
    await wait_until(lambda: "interrupted by a restart" in world.bot.log(), timeout=30, what="the recovery")
    await asyncio.sleep(1)
    result = interaction.original
    assert result is not None and result.attachments  # the member has the image, refunded: it is theirs
    button_id(result, "Delete"), button_id(result, "Re-roll")  # its buttons are still there (each raises if not)
    assert any("restarted" in (m.content or "") for m in interaction.followups)
