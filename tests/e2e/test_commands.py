"""Command definitions as Discord sees them: servers only, limits declared, and global syncs only on change."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from tests.botenv import REPO
from tests.e2e.harness import World, button_id, content_of, has_attachments
from tests.fakes.discord import InvalidCommandInput

GUILD_CONTEXT = 0
GUILD_INSTALL = 0


def option(command: dict, name: str) -> dict:
    return next(o for o in command["options"] if o["name"] == name)


async def test_global_sync_happens_once_and_not_again_on_an_unchanged_restart(world: World) -> None:
    await world.start_bot(DISCORD_GUILD_ID="")
    assert world.discord.command_puts[None] == 1
    assert world.bot.log().count("event loop: uvloop") == 1  # bot.py runs on uvloop where it is installed
    assert " WARNING " not in world.bot.log()  # a clean start warns about nothing (voice libraries included)
    commands = world.discord.commands[None]
    assert set(commands) == {"imagine", "quota", "settings"}
    for command in commands.values():
        assert command.get("contexts") == [GUILD_CONTEXT], command["name"]
        assert command.get("integration_types") == [GUILD_INSTALL], command["name"]
    # /quota me is for everyone, so neither group may carry default_member_permissions (checked by the bot).
    assert commands["quota"].get("default_member_permissions") is None
    assert commands["settings"].get("default_member_permissions") is None
    subcommands = {o["name"] for o in commands["quota"]["options"]}
    assert subcommands == {
        "me",
        "set",
        "set-role",
        "set-default",
        "exempt",
        "budget",
        "budget-clear",
        "clear",
        "reset",
        "view",
        "report",
    }
    assert {o["name"] for o in commands["settings"]["options"]} == {
        "show",
        "defaults",
        "max-count",
        "mod-role",
        "block",
        "unblock",
        "log-channel",
    }

    await world.restart_bot(crash=False)
    interaction = await world.imagine(prompt="after a restart")
    await interaction.wait_for(has_attachments(1), timeout=30)
    assert world.discord.command_puts[None] == 1, "a restart with unchanged commands must not sync again"


async def test_imagine_declares_its_limits_so_discord_helps_the_member(world: World) -> None:
    await world.start_bot()
    imagine = world.discord.commands[world.guild.id]["imagine"]
    prompt = option(imagine, "prompt")
    assert prompt["required"] and prompt["max_length"] == 4000
    assert option(imagine, "size").get("autocomplete") is True
    assert {c["value"] for c in option(imagine, "quality")["choices"]} == {"low", "medium", "high"}
    assert (option(imagine, "count")["min_value"], option(imagine, "count")["max_value"]) == (1, 10)
    assert {c["value"] for c in option(imagine, "background")["choices"]} == {"auto", "opaque"}
    assert {c["value"] for c in option(imagine, "format")["choices"]} == {"png", "jpeg", "webp"}
    compression = option(imagine, "compression")
    assert (compression["min_value"], compression["max_value"]) == (0, 100)

    for bad in (
        {"prompt": "x" * 4001},
        {"prompt": "x", "count": 11},
        {"prompt": "x", "quality": "ultra"},
        {"prompt": "x", "compression": 101},
        {"prompt": "x", "format": "gif"},
    ):
        with pytest.raises(InvalidCommandInput):
            await world.imagine(**bad)
    assert world.onemin.requests == []


async def test_size_autocomplete_suggests_valid_sizes_with_their_ratio(world: World) -> None:
    await world.start_bot()
    choices = await world.discord.autocomplete(
        world.member, world.channel, "imagine", focused="size", options={"prompt": "x", "size": "1536x"}
    )
    assert choices and all(c["value"].startswith("1536x") for c in choices)
    assert any(":" in c["name"] for c in choices)
    empty = await world.discord.autocomplete(
        world.member, world.channel, "imagine", focused="size", options={"prompt": "x", "size": ""}
    )
    assert any(c["value"] == "3840x2160" for c in empty)


async def test_large_images_that_each_fit_are_split_across_messages_under_the_request_cap(world: World) -> None:
    world.guild.attachment_size_limit = 50 * 1024 * 1024  # a boosted server: each file fits on its own
    world.onemin.noisy = True  # a noisy 2048x2048 PNG is about 12 MB: four do not fit one 25 MiB request
    await world.start_bot()
    interaction = await world.imagine(prompt="four heavy images", size="2048x2048", count=4, quality="low")
    await interaction.wait_for(has_attachments(4), timeout=90)
    messages = [m for m in interaction.messages if m.attachments]
    assert len(messages) >= 2
    for message in messages:
        assert sum(a.size for a in message.attachments) < 25 * 1024 * 1024
    assert "Part 1 of" in content_of(interaction)
    assert not [e for e in world.discord.protocol_errors if e.startswith("40005")]

    # Delete under the first part removes the whole result, every part of it.
    first = messages[0]
    click = await world.discord.click(world.member, world.channel, first, button_id(first, "Delete"))
    await click.wait_for_callback(timeout=3)
    await world.discord.wait_for(lambda: all(m.deleted for m in messages), timeout=10, what="every part deleted")


async def test_delete_pressed_before_a_split_result_is_recorded_still_removes_every_part(world: World) -> None:
    world.guild.attachment_size_limit = 50 * 1024 * 1024
    world.onemin.noisy = True  # four ~12 MB images: two messages
    await world.start_bot()
    # The second part reaches Discord, but its answer is held: the bot has not yet recorded where the result is.
    world.discord.hold_answer_next("POST", "/webhooks/", seconds=3)
    interaction = await world.imagine(prompt="four heavy images", size="2048x2048", count=4, quality="low")
    await interaction.wait_for(has_attachments(4), timeout=90)
    messages = [m for m in interaction.messages if m.attachments]
    assert len(messages) >= 2

    first = messages[0]
    click = await world.discord.click(world.member, world.channel, first, button_id(first, "Delete"))
    await click.wait_for_callback(timeout=3)
    await world.discord.wait_for(lambda: all(m.deleted for m in messages), timeout=15, what="every part deleted")


async def test_a_database_that_cannot_be_opened_stops_the_bot_with_one_line_naming_it(world: World) -> None:
    env = world.env(DATABASE_URL="sqlite:////proc/imagine.db")  # logs in to the fake, then cannot create the file
    process = await asyncio.create_subprocess_exec(
        sys.executable, "bot.py", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    last = stderr.decode().strip().splitlines()[-1]
    assert last.startswith("Cannot start: DATABASE_URL: the database could not be opened ("), last
    assert "Traceback" not in stderr.decode() and "Event loop is closed" not in stderr.decode()


async def test_an_unreachable_discord_stops_the_bot_with_one_line_naming_the_url(world: World) -> None:
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    api_url = f"http://127.0.0.1:{port}/api/v10"
    env = world.env(DISCORD_API_URL=api_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "bot.py", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    last = stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"Cannot start: Discord could not be reached at {api_url} (ClientConnectorError"), last
    assert "Traceback" not in stderr.decode() and "Event loop is closed" not in stderr.decode()
    assert env["DISCORD_TOKEN"] not in stderr.decode()


async def test_commands_synced_to_a_development_server_are_removed_once_it_is_unset(world: World) -> None:
    await world.start_bot()  # DISCORD_GUILD_ID set: the commands go to the test server only
    assert set(world.discord.commands[world.guild.id]) == {"imagine", "quota", "settings"}
    await world.restart_bot(crash=False, DISCORD_GUILD_ID="")
    # In production the global commands are synced, and the server's own copies would show beside them.
    assert set(world.discord.commands[None]) == {"imagine", "quota", "settings"}
    assert world.discord.commands[world.guild.id] == {}
    puts = dict(world.discord.command_puts)
    await world.restart_bot(crash=False, DISCORD_GUILD_ID="")
    assert world.discord.command_puts == puts  # once only
