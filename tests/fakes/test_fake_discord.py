"""Tests of the fake Discord, driven by a real discord.py client in-process."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import discord
import pytest
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route
from discord.webhook.async_ import async_context, interaction_response_params

from tests.fakes.discord import (
    DEFAULT_EVERYONE_PERMISSIONS,
    MANAGE_GUILD,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeRole,
    InvalidCommandInput,
)
from tests.fakes.discord.messages import new_message

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]
SIZES = ["1024x1024", "1536x1024", "1024x1536", "1536x1536"]


class ProbeBot(discord.Client):
    """A small bot whose command bodies each test supplies with `handle`."""

    def __init__(self) -> None:
        # guild_ready_timeout: discord.py waits that long after the last GUILD_CREATE before on_ready.
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.handlers: dict[str, Handler] = {}
        self.autocomplete_seen: list[str] = []
        self._add_commands()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before identifying again after a reconnect; nothing to pace here."""

    def handle(self, name: str, handler: Handler) -> asyncio.Future[Any]:
        """Run `handler(interaction, **options)` for command `name`; the future gets its result or exception."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def wrapped(interaction: discord.Interaction, **options: Any) -> None:
            try:
                result = await handler(interaction, **options)
            except Exception as error:
                log.exception("handler for %s failed", name)
                done.set_result(error)
            else:
                done.set_result(result)

        self.handlers[name] = wrapped
        return done

    def _add_commands(self) -> None:
        bot = self

        @self.tree.command()
        @app_commands.guild_only()
        @app_commands.allowed_installs(guilds=True, users=False)
        @app_commands.describe(prompt="what to draw", count="how many", quality="q", size="WxH", artist="who")
        async def imagine(
            interaction: discord.Interaction,
            prompt: app_commands.Range[str, 1, 4000],
            count: app_commands.Range[int, 1, 10] = 1,
            quality: Literal["low", "medium", "high"] = "medium",
            size: str = "1024x1024",
            artist: discord.Member | None = None,
        ) -> None:
            """Draw something."""
            options = {"prompt": prompt, "count": count, "quality": quality, "size": size, "artist": artist}
            await bot.handlers["imagine"](interaction, **options)

        @imagine.autocomplete("size")
        async def sizes(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            bot.autocomplete_seen.append(current)
            return [app_commands.Choice(name=s, value=s) for s in SIZES if s.startswith(current)]

        quota = app_commands.Group(name="quota", description="Quotas", guild_only=True)

        @quota.command(name="set")
        async def quota_set(
            interaction: discord.Interaction,
            member: discord.Member,
            credits: str,
            role: discord.Role | None = None,
            log_channel: discord.TextChannel | None = None,
        ) -> None:
            """Set a limit."""
            options = {"member": member, "credits": credits, "role": role, "log_channel": log_channel}
            await bot.handlers["quota set"](interaction, **options)

        self.tree.add_command(quota)

        @self.tree.command(name="dm-only")
        @app_commands.allowed_contexts(guilds=False, dms=True, private_channels=False)
        async def dm_only(interaction: discord.Interaction) -> None:
            """Only in DMs."""

        @self.tree.command(name="user-app")
        @app_commands.allowed_installs(guilds=False, users=True)
        async def user_app(interaction: discord.Interaction) -> None:
            """Only as a user-installed app."""

        @self.tree.command(name="admin")
        @app_commands.default_permissions(manage_guild=True)
        async def admin(interaction: discord.Interaction) -> None:
            """Moderators only."""
            await bot.handlers["admin"](interaction)


@dataclass
class World:
    """A fake Discord with a guild, a channel, two members, and a ProbeBot connected to it."""

    fake: FakeDiscord
    bot: ProbeBot
    guild: FakeGuild
    channel: FakeChannel
    artists: FakeRole
    alice: FakeMember  # an ordinary member with the artists role
    mod: FakeMember  # has Manage Guild


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord() as fake:
        guild = fake.add_guild(name="Probe Server")
        channel = fake.add_channel(guild, name="art")
        artists = fake.add_role(guild, name="artists")
        alice = fake.add_member(guild, username="alice", roles=[artists])
        mod = fake.add_member(guild, username="mod", permissions=DEFAULT_EVERYONE_PERMISSIONS | MANAGE_GUILD)
        saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        Route.BASE = fake.api_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
        bot = ProbeBot()
        runner = asyncio.create_task(bot.start(fake.token))
        try:
            await fake.wait_until_ready(timeout=10)
            await asyncio.wait_for(bot.wait_until_ready(), 10)
            await bot.tree.sync()
            yield World(fake, bot, guild, channel, artists, alice, mod)
        finally:
            await bot.close()
            await asyncio.wait_for(runner, 10)
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


async def finished(done: asyncio.Future[Any]) -> Any:
    """The handler's result (or the exception it raised), within 5 s."""
    return await asyncio.wait_for(done, 5)


def png(size: int = 64) -> bytes:
    """Bytes standing in for an image (the fake does not decode files)."""
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (size // 256) + b"\0" * (size % 256)


async def test_bot_connects_and_receives_its_guilds(world: World) -> None:
    bot, fake = world.bot, world.fake
    assert bot.user is not None and bot.user.id == fake.bot_user_id and bot.user.bot
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(world.guild.id)
    assert guild is not None and guild.name == "Probe Server"
    assert [c.name for c in guild.text_channels] == ["art"]
    assert {r.name for r in guild.roles} >= {"@everyone", "artists", fake.bot_name}
    assert guild.me is not None and guild.me.id == fake.bot_user_id
    # discord.py asked for a compressed stream; the fake's plain text frames were understood anyway.
    assert fake.gateway.connections[0]["compress"] in ("zstd-stream", "zlib-stream")


async def test_commands_sync_globally_and_per_guild(world: World) -> None:
    bot, fake = world.bot, world.fake
    stored = fake.commands[None]
    assert set(stored) == {"imagine", "quota", "dm-only", "user-app", "admin"}
    imagine = stored["imagine"]
    assert imagine["contexts"] == [0] and imagine["integration_types"] == [0]
    assert [c["value"] for c in imagine["options"][2]["choices"]] == ["low", "medium", "high"]
    assert imagine["application_id"] == str(fake.application_id) and "guild_id" not in imagine
    assert [o["name"] for o in imagine["options"]] == ["prompt", "count", "quality", "size", "artist"]
    assert stored["admin"]["default_member_permissions"] == str(MANAGE_GUILD)

    fetched = {c.name: c.id for c in await bot.tree.fetch_commands()}
    assert fetched["imagine"] == int(imagine["id"])
    resynced = {c.name: c.id for c in await bot.tree.sync()}
    assert resynced == fetched  # ids survive a bulk overwrite, as on Discord

    target = discord.Object(world.guild.id)
    bot.tree.copy_global_to(guild=target)
    synced = await bot.tree.sync(guild=target)
    assert {c.name for c in synced} == set(stored)
    assert fake.commands[world.guild.id]["imagine"]["guild_id"] == str(world.guild.id)
    assert fake.command_puts[None] == 2 and fake.command_puts[world.guild.id] == 1
    fake.assert_clean()


async def test_invoke_delivers_options_member_roles_and_filesize_limit(world: World) -> None:
    fake, bot = world.fake, world.bot
    world.guild.attachment_size_limit = 8 * 1024 * 1024

    async def answer(interaction: discord.Interaction, **options: Any) -> tuple[discord.Interaction, dict[str, Any]]:
        await interaction.response.send_message("ok")
        return interaction, options

    done = bot.handle("imagine", answer)
    options = {"prompt": "a cat", "count": 3, "quality": "high", "artist": world.mod}
    sent = await fake.invoke(world.alice, world.channel, "imagine", options=options)
    interaction, received = await finished(done)
    assert received["prompt"] == "a cat" and received["count"] == 3 and received["quality"] == "high"
    assert received["size"] == "1024x1024"  # not sent: the bot's default
    assert isinstance(received["artist"], discord.Member) and received["artist"].id == world.mod.id
    user = interaction.user
    assert isinstance(user, discord.Member) and user.id == world.alice.id
    assert world.artists.id in [r.id for r in user.roles]
    assert not user.guild_permissions.manage_guild and not interaction.permissions.manage_guild
    assert interaction.filesize_limit == 8 * 1024 * 1024
    assert interaction.app_permissions.send_messages and interaction.app_permissions.attach_files
    assert sent.original is not None and sent.original.content == "ok" and not sent.ephemeral

    done = bot.handle("imagine", answer)
    await fake.invoke(world.mod, world.channel, "imagine", options={"prompt": "x"})
    interaction, _ = await finished(done)
    assert interaction.user.guild_permissions.manage_guild and interaction.permissions.manage_guild
    fake.assert_clean()


async def test_input_discords_client_would_refuse_is_refused(world: World) -> None:
    fake, alice, channel = world.fake, world.alice, world.channel
    refused: list[dict[str, Any]] = [
        {},  # prompt is required
        {"prompt": ""},
        {"prompt": "x" * 4001},
        {"prompt": "x", "count": 11},
        {"prompt": "x", "count": 0},
        {"prompt": "x", "count": 2.5},
        {"prompt": "x", "quality": "ultra"},
        {"prompt": "x", "colour": "red"},
        {"prompt": "x", "artist": "not a member"},
    ]
    for options in refused:
        with pytest.raises(InvalidCommandInput):
            await fake.invoke(alice, channel, "imagine", options=options)
    with pytest.raises(InvalidCommandInput, match="subcommand"):
        await fake.invoke(alice, channel, "quota", options={})
    with pytest.raises(InvalidCommandInput, match="contexts"):
        await fake.invoke(alice, channel, "dm-only")
    with pytest.raises(InvalidCommandInput, match="integration_types"):
        await fake.invoke(alice, channel, "user-app")
    with pytest.raises(InvalidCommandInput, match="default_member_permissions"):
        await fake.invoke(alice, channel, "admin")
    with pytest.raises(InvalidCommandInput, match="synced"):
        await fake.invoke(alice, channel, "nope")
    assert fake.interactions == {}

    done = world.bot.handle("quota set", lambda i, **o: _reply_with(i, o))
    options = {"member": alice, "credits": "2.5", "role": world.artists, "log_channel": channel}
    await fake.invoke(world.mod, channel, "quota", subcommand="set", options=options)
    received = await finished(done)
    assert isinstance(received["member"], discord.Member) and received["member"].id == alice.id
    assert received["credits"] == "2.5"
    assert isinstance(received["role"], discord.Role) and received["role"].name == "artists"
    assert received["log_channel"].id == channel.id and received["log_channel"].name == "art"
    done = world.bot.handle("admin", lambda i: _reply_with(i, {}))
    await fake.invoke(world.mod, channel, "admin")
    await finished(done)
    fake.assert_clean()


async def _reply_with(interaction: discord.Interaction, value: Any) -> Any:
    await interaction.response.send_message("ok", ephemeral=True)
    return value


async def test_defer_then_followup_with_a_file(world: World) -> None:
    fake, bot = world.fake, world.bot
    image = png(5000)

    async def deliver(interaction: discord.Interaction, **options: Any) -> discord.WebhookMessage:
        await interaction.response.defer(thinking=True)
        file = discord.File(io.BytesIO(image), filename="cat.png", description="a cat, drawn")
        embed = discord.Embed(title="a cat", description="1024x1024 · medium")
        return await interaction.followup.send(
            "a cat", file=file, embed=embed, allowed_mentions=discord.AllowedMentions.none()
        )

    done = bot.handle("imagine", deliver)
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "a cat"})
    sent = await finished(done)
    assert (await interaction.wait_for_callback())["type"] == 5
    original = interaction.original
    assert original is not None and sent.id == original.id  # the followup replaced the "thinking" placeholder
    assert interaction.followups == [] and interaction.messages == [original]
    assert not original.loading and not original.ephemeral and not interaction.ephemeral
    assert original.content == "a cat" and original.embeds[0]["title"] == "a cat"
    [attachment] = original.attachments
    assert attachment.data == image and attachment.size == len(image)
    assert attachment.filename == "cat.png" and attachment.description == "a cat, drawn"
    assert attachment.content_type == "image/png"
    assert sent.attachments[0].description == "a cat, drawn"
    followup_request = next(r for r in fake.requests if r.route == "/webhooks/{webhook_id}/{webhook_token}")
    assert followup_request.files[0].data == image
    assert interaction.response_delay is not None and interaction.response_delay < fake.first_response_deadline
    fake.assert_clean()


async def test_ephemeral_defer_makes_the_first_followup_ephemeral(world: World) -> None:
    fake, bot = world.fake, world.bot

    async def respond(interaction: discord.Interaction, **options: Any) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        await interaction.followup.send("only you see this")  # not asked ephemeral: takes the defer's visibility
        await interaction.followup.send("everyone sees this")
        await interaction.followup.send("only you again", ephemeral=True)

    done = bot.handle("imagine", respond)
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "x"})
    await finished(done)
    assert interaction.ephemeral
    assert [(m.content, m.ephemeral) for m in interaction.messages] == [
        ("only you see this", True),
        ("everyone sees this", False),
        ("only you again", True),
    ]
    fake.assert_clean()


async def test_a_late_first_response_gets_10062(world: World) -> None:
    fake, bot = world.fake, world.bot
    fake.first_response_deadline = 0.2

    async def slow(interaction: discord.Interaction, **options: Any) -> Exception | None:
        await asyncio.sleep(0.35)
        try:
            await interaction.response.defer()
        except discord.HTTPException as error:
            return error
        return None

    done = bot.handle("imagine", slow)
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "x"})
    error = await finished(done)
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert interaction.callbacks == [] and len(interaction.rejected_callbacks) == 1
    assert [e.split(":")[0] for e in fake.protocol_errors] == ["unanswered", "10062"]
    with pytest.raises(AssertionError, match="10062"):
        fake.assert_clean()


async def test_a_second_response_gets_40060(world: World) -> None:
    fake, bot = world.fake, world.bot

    async def twice(interaction: discord.Interaction, **options: Any) -> Exception | None:
        await interaction.response.send_message("first")
        # discord.py refuses a second response itself; go one level down, as a restarted process would.
        try:
            await async_context.get().create_interaction_response(
                interaction.id,
                interaction.token,
                session=interaction._session,
                params=interaction_response_params(type=5),
            )
        except discord.HTTPException as error:
            return error
        return None

    done = bot.handle("imagine", twice)
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "x"})
    error = await finished(done)
    assert isinstance(error, discord.HTTPException) and error.status == 400 and error.code == 40060
    assert len(interaction.callbacks) == 1 and interaction.rejected_callbacks == [{"type": 5}]
    assert [e.split(":")[0] for e in fake.protocol_errors] == ["40060"]


async def test_a_file_over_the_guild_limit_gets_413(world: World) -> None:
    fake, bot = world.fake, world.bot
    world.guild.attachment_size_limit = 4096

    async def too_big(interaction: discord.Interaction, **options: Any) -> tuple[int, Exception | None]:
        await interaction.response.defer(thinking=True)
        try:
            await interaction.followup.send(file=discord.File(io.BytesIO(png(4097)), "big.png"))
        except discord.HTTPException as error:
            await interaction.followup.send("That image is too large for this server.")
            return interaction.filesize_limit, error
        return interaction.filesize_limit, None

    done = bot.handle("imagine", too_big)
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "x"})
    limit, error = await finished(done)
    assert limit == 4096
    assert isinstance(error, discord.HTTPException) and error.status == 413 and error.code == 40005
    assert [m.content for m in interaction.messages] == ["That image is too large for this server."]
    assert [e.split(":")[0] for e in fake.protocol_errors] == ["40005"]


async def test_eleven_files_and_an_oversized_request_are_refused(world: World) -> None:
    fake, bot = world.fake, world.bot
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)

    def files(count: int, size: int) -> list[discord.File]:
        return [discord.File(io.BytesIO(png(size)), f"{n}.png") for n in range(count)]

    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(files=files(11, 100))
    assert refused.value.status == 400 and refused.value.code == 50035
    fake.request_size_limit = 5000
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(files=files(3, 2000))  # each file fits the guild's limit; together too much
    assert refused.value.status == 413 and refused.value.code == 40005
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send("x" * 2001)  # the OpenAPI description allows 4000; a bot gets 2000
    assert refused.value.status == 400 and refused.value.code == 50035
    message = await channel.send(files=files(2, 1000))
    assert len(message.attachments) == 2
    assert [len(m.attachments) for m in fake.channel_messages(world.channel)] == [2]
    assert [e.split(":")[0] for e in fake.protocol_errors] == ["50035", "40005", "50035"]
    assert "2001 characters" in fake.protocol_errors[2] and fake.spec_violations == []


class PromptModal(discord.ui.Modal, title="Edit & re-roll"):
    """A modal mixing both shapes Discord accepts: a text input in an action row, and one in a label."""

    prompt = discord.ui.TextInput(label="Prompt", custom_id="prompt", default="a cat", max_length=4000)
    note = discord.ui.Label(text="Note", component=discord.ui.TextInput(custom_id="note", required=False))

    def __init__(self, submitted: asyncio.Future[dict[str, str]]) -> None:
        super().__init__()
        self.submitted = submitted

    async def on_submit(self, interaction: discord.Interaction) -> None:
        note = self.note.component
        assert isinstance(note, discord.ui.TextInput)
        self.submitted.set_result({"prompt": self.prompt.value, "note": note.value})
        await interaction.response.send_message("Re-rolling.", ephemeral=True)


async def test_a_button_click_and_a_modal_submit_reach_the_bot(world: World) -> None:
    fake, bot = world.fake, world.bot
    submitted: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
    clicked: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class ResultView(discord.ui.View):
        @discord.ui.button(label="Edit & re-roll", custom_id="edit:42")
        async def edit(self, interaction: discord.Interaction, button: discord.ui.Button[ResultView]) -> None:
            clicked.set_result(interaction.user.id)
            await interaction.response.send_modal(PromptModal(submitted))

    async def deliver(interaction: discord.Interaction, **options: Any) -> None:
        await interaction.response.send_message("a cat", view=ResultView(timeout=None))

    done = bot.handle("imagine", deliver)
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "a cat"})
    await finished(done)
    assert interaction.original is not None
    click = await fake.click(world.mod, world.channel, interaction.original, "edit:42")
    assert await asyncio.wait_for(clicked, 5) == world.mod.id
    await click.wait_for(lambda i: i.modal is not None, timeout=5)
    assert click.modal is not None and click.modal["title"] == "Edit & re-roll"
    submit = await fake.submit_modal(world.mod, world.channel, click.modal["custom_id"], {"note": "bigger"})
    assert await asyncio.wait_for(submitted, 5) == {"prompt": "a cat", "note": "bigger"}  # prompt kept its default
    await submit.wait_for(lambda i: bool(i.messages), timeout=5)
    assert submit.ephemeral and submit.messages[0].content == "Re-rolling."
    with pytest.raises(InvalidCommandInput):
        await fake.click(world.mod, world.channel, interaction.original, "no-such-button")
    with pytest.raises(InvalidCommandInput):
        await fake.submit_modal(world.mod, world.channel, click.modal["custom_id"], {"prompt": ""})
    fake.assert_clean()


async def test_autocomplete_choices_come_back(world: World) -> None:
    fake = world.fake
    choices = await fake.autocomplete(world.alice, world.channel, "imagine", focused="size", options={"size": "15"})
    assert choices == [{"name": s, "value": s} for s in ("1536x1024", "1536x1536")]
    assert world.bot.autocomplete_seen == ["15"]
    with pytest.raises(InvalidCommandInput, match="autocomplete"):
        await fake.autocomplete(world.alice, world.channel, "imagine", focused="prompt", options={})
    fake.assert_clean()


async def test_the_spec_rejects_an_overlong_embed_title_and_custom_id(world: World) -> None:
    fake, bot = world.fake, world.bot

    async def sloppy(interaction: discord.Interaction, **options: Any) -> list[Exception]:
        errors = []
        try:
            await interaction.response.send_message(embed=discord.Embed(title="t" * 257))
        except discord.HTTPException as error:
            errors.append(error)
        view = discord.ui.View()
        view.add_item(discord.ui.Button(label="Re-roll", custom_id="r" * 101))
        try:
            await interaction.response.send_message("x", view=view)
        except discord.HTTPException as error:
            errors.append(error)
        await interaction.response.send_message(embed=discord.Embed(title="t" * 256))
        return errors

    done = bot.handle("imagine", sloppy)
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "x"})
    errors = await finished(done)
    assert [(e.status, e.code) for e in errors] == [(400, 50035), (400, 50035)]
    assert "data.embeds.0.title" in errors[0].text and "custom_id" in errors[1].text
    assert len(fake.spec_violations) == 2
    assert "embeds[0].title" in fake.spec_violations[0]
    assert "components[0].components[0].custom_id" in fake.spec_violations[1]
    assert len(interaction.rejected_callbacks) == 2 and len(interaction.callbacks) == 1
    assert fake.protocol_errors == []


async def test_mentions_would_ping_follows_allowed_mentions(world: World) -> None:
    fake, bot = world.fake, world.bot
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    text = f"{world.alice.mention} drew this for {world.artists.mention} @everyone"

    silent = await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
    loud = await channel.send(text)
    alice = [discord.Object(world.alice.id)]
    # A trap: AllowedMentions(users=[...]) alone keeps everyone=True and roles=True.
    careless = await channel.send(text, allowed_mentions=discord.AllowedMentions(users=alice))
    only_alice = await channel.send(
        text, allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=alice)
    )
    in_embed = await channel.send(embed=discord.Embed(description=text))
    by_id = {m.id: m for m in fake.channel_messages(world.channel)}
    assert by_id[silent.id].mentions_would_ping == set() and by_id[silent.id].allowed_mentions is not None
    assert by_id[loud.id].allowed_mentions is None
    assert by_id[loud.id].mentions_would_ping == {f"<@{world.alice.id}>", f"<@&{world.artists.id}>", "@everyone"}
    assert by_id[careless.id].mentions_would_ping == by_id[loud.id].mentions_would_ping
    assert by_id[only_alice.id].mentions_would_ping == {f"<@{world.alice.id}>"}
    assert by_id[in_embed.id].mentions_would_ping == set()
    fake.assert_clean()
    # Listing users while also parsing users contradicts itself: Discord refuses the message.
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=world.channel.id)
    body = {"content": text, "allowed_mentions": {"parse": ["users"], "users": [str(world.alice.id)]}}
    with pytest.raises(discord.HTTPException) as refused:
        await bot.http.request(route, json=body)
    assert (refused.value.status, refused.value.code) == (400, 50035)
    fake.protocol_errors.clear()


async def test_dms_and_channels_the_bot_cannot_post_in(world: World) -> None:
    fake, bot = world.fake, world.bot
    private = fake.add_member(world.guild, username="private")
    private.accepts_dms = False
    readonly = fake.add_channel(world.guild, name="announcements", bot_can_send=False)
    await fake.settle()
    await _eventually(lambda: bot.get_channel(readonly.id) is not None)

    alice = await bot.fetch_user(world.alice.id)
    await alice.send("Your images could not be delivered; your credits were refunded.")
    assert [m.content for m in fake.dm_messages(world.alice)] == [
        "Your images could not be delivered; your credits were refunded."
    ]
    with pytest.raises(discord.Forbidden) as refused:
        await (await bot.fetch_user(private.id)).send("hi")
    assert refused.value.code == 50007
    channel = bot.get_channel(readonly.id)
    assert isinstance(channel, discord.TextChannel)
    assert not channel.permissions_for(channel.guild.me).send_messages  # the bot can tell before trying
    with pytest.raises(discord.Forbidden) as refused:
        await channel.send("hi")
    assert refused.value.code == 50013
    assert [e.split(":")[0] for e in fake.protocol_errors] == ["50007", "50013"]


async def _eventually(condition: Callable[[], bool]) -> None:
    """Wait up to 2 s for the bot to have processed what the fake sent it."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the bot never got there")


async def test_the_webhook_needs_a_response_first_and_expires(world: World) -> None:
    fake, bot = world.fake, world.bot
    expired = asyncio.Event()

    async def careless(interaction: discord.Interaction, **options: Any) -> list[Exception]:
        errors = []
        try:
            await interaction.followup.send("too early")
        except discord.HTTPException as error:
            errors.append(error)
        await interaction.response.defer(thinking=True)
        await expired.wait()
        try:
            await interaction.edit_original_response(content="too late")
        except discord.HTTPException as error:
            errors.append(error)
        return errors

    done = bot.handle("imagine", careless)
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "x"})
    await interaction.wait_for_callback()
    interaction.expire_token()
    expired.set()
    errors = await finished(done)
    assert [(e.status, e.code) for e in errors] == [(404, 10015), (401, 50027)]
    assert [e.split(":")[0] for e in fake.protocol_errors] == ["10015", "50027"]


async def test_an_expired_response_is_still_the_bots_message_in_the_channel(world: World) -> None:
    # After the token's 15 minutes the response can still be edited as a channel message, by its author only.
    fake, bot = world.fake, world.bot
    done = bot.handle("imagine", lambda interaction, **options: interaction.response.send_message("queued"))
    interaction = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "x"})
    response = await finished(done)
    interaction.expire_token()
    assert response.message_id == interaction.original.id
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    await channel.get_partial_message(response.message_id).edit(content="done")
    assert interaction.original.content == "done"

    theirs = new_message(
        {"content": "hi"},
        [],
        channel_id=world.channel.id,
        guild_id=world.guild.id,
        author_id=world.alice.id,
        attachment_url=fake.attachment_url,
    )
    fake.remember_message(theirs)
    with pytest.raises(discord.Forbidden) as refused:
        await channel.get_partial_message(theirs.id).edit(content="mine now")
    assert refused.value.code == 50005 and theirs.content == "hi"
    assert [e.split(":")[0] for e in fake.protocol_errors] == ["50005"]
    fake.protocol_errors.clear()


async def test_a_dropped_gateway_connection_is_reestablished(world: World) -> None:
    fake, bot = world.fake, world.bot
    await fake.disconnect_bot()
    await fake.wait_until_ready(timeout=10)
    assert fake.gateway.identify_count == 2
    # discord.py tried to resume first; the fake refused (INVALID_SESSION) and it identified again.
    assert len(fake.gateway.connections) == 3
    done = bot.handle("imagine", lambda i, **o: _reply_with(i, o))
    await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "again"})
    assert (await finished(done))["prompt"] == "again"
    fake.assert_clean()


async def test_unknown_routes_and_bad_tokens_are_recorded(world: World) -> None:
    fake, bot = world.fake, world.bot
    with pytest.raises(discord.NotFound):
        await bot.http.request(discord.http.Route("GET", "/guilds/{guild_id}/audit-logs", guild_id=world.guild.id))
    assert fake.protocol_errors == [f"404: GET /guilds/{world.guild.id}/audit-logs: no such route in the fake"]
    token, bot.http.token = bot.http.token, "wrong"
    try:
        with pytest.raises(discord.HTTPException) as refused:
            await bot.http.request(discord.http.Route("GET", "/users/@me"))
    finally:
        bot.http.token = token
    assert refused.value.status == 401
    assert fake.protocol_errors[-1] == "0: GET /users/@me: missing or wrong bot token"


async def test_component_responses_edit_or_delete_the_clicked_message(world: World) -> None:
    fake, bot = world.fake, world.bot

    class StatusView(discord.ui.View):
        @discord.ui.button(label="Cancel", custom_id="cancel:7")
        async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button[StatusView]) -> None:
            await interaction.response.edit_message(content="Cancelled; 2 credits refunded.")

        @discord.ui.button(label="Delete", custom_id="delete:7")
        async def delete(self, interaction: discord.Interaction, button: discord.ui.Button[StatusView]) -> None:
            await interaction.response.defer()
            await interaction.delete_original_response()

    async def queue(interaction: discord.Interaction, **options: Any) -> None:
        await interaction.response.send_message("Queued: position 3.", view=StatusView(timeout=None))

    done = bot.handle("imagine", queue)
    command = await fake.invoke(world.alice, world.channel, "imagine", options={"prompt": "x"})
    await finished(done)
    status = command.original
    assert status is not None

    cancel = await fake.click(world.alice, world.channel, status, "cancel:7")
    await cancel.wait_for(lambda i: bool(i.callbacks), timeout=5)
    assert cancel.callbacks[0]["type"] == 7 and cancel.original is status
    assert status.content == "Cancelled; 2 credits refunded." and status.edits == 1
    assert [b["custom_id"] for b in status.components[0]["components"]] == ["cancel:7", "delete:7"]

    delete = await fake.click(world.mod, world.channel, status, "delete:7")
    await delete.wait_for(lambda i: i.deleted, timeout=5)
    assert delete.callbacks[0]["type"] == 6 and status.deleted and command.messages == []
    with pytest.raises(InvalidCommandInput):
        await fake.click(world.alice, world.channel, status, "cancel:7")
    fake.assert_clean()


async def test_world_changes_after_ready_reach_the_bot(world: World) -> None:
    fake, bot = world.fake, world.bot
    second = fake.add_guild(name="Second Server")
    painters = fake.add_role(world.guild, name="painters", permissions=MANAGE_GUILD)
    gallery = fake.add_channel(world.guild, name="gallery")
    newcomer = fake.add_member(world.guild, username="newcomer", roles=[painters])
    await fake.settle()
    await _eventually(lambda: bot.get_guild(second.id) is not None and bot.get_channel(gallery.id) is not None)
    guild = bot.get_guild(world.guild.id)
    assert guild is not None and guild.get_role(painters.id) is not None

    async def answer(interaction: discord.Interaction, **options: Any) -> discord.Interaction:
        await interaction.response.send_message("ok", ephemeral=True)
        return interaction

    done = bot.handle("imagine", answer)
    sent = await fake.invoke(newcomer, gallery, "imagine", options={"prompt": "x"})
    interaction = await finished(done)
    assert isinstance(interaction.user, discord.Member)
    assert painters.id in [r.id for r in interaction.user.roles] and interaction.user.guild_permissions.manage_guild
    assert interaction.channel is not None and interaction.channel.id == gallery.id
    assert sent.ephemeral and sent.messages[0].ephemeral
    fake.assert_clean()


async def test_spec_checks_can_be_sampled_per_route(world: World) -> None:
    # The burst benchmark checks one body in N per route; bodies in between are not checked at all.
    fake, bot = world.fake, world.bot
    fake.validate_one_in = 2
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    overlong = discord.Embed(title="t" * 257)
    validated_before = fake.bodies_validated

    with pytest.raises(discord.HTTPException):
        await channel.send(embed=overlong)  # the 1st body of the route: checked, refused
    await channel.send(embed=overlong)  # the 2nd: not checked
    with pytest.raises(discord.HTTPException):
        await channel.send(embed=overlong)  # the 3rd: checked again

    assert len(fake.spec_violations) == 2 and fake.bodies_validated - validated_before == 2
    assert fake.bodies_seen["POST", "/channels/{channel_id}/messages"] == 3
    fake.spec_violations.clear()
    fake.protocol_errors.clear()


async def test_spec_checks_can_wait_until_asked_for(world: World) -> None:
    # The burst benchmark keeps the bodies and checks them after the burst: nothing is refused on the way.
    fake, bot = world.fake, world.bot
    fake.validate_later = True
    channel = bot.get_channel(world.channel.id)
    assert isinstance(channel, discord.TextChannel)
    validated_before = fake.bodies_validated

    await channel.send(embed=discord.Embed(title="t" * 257))  # breaks the spec, still posted
    await channel.send(embed=discord.Embed(title="fine"))
    assert not fake.spec_violations and fake.bodies_validated == validated_before

    assert fake.validate_deferred() == 2
    assert fake.bodies_validated - validated_before == 2
    assert len(fake.spec_violations) == 1 and "/channels/{channel_id}/messages" in fake.spec_violations[0]
    assert fake.validate_deferred() == 0  # each kept body is checked once
    fake.spec_violations.clear()
