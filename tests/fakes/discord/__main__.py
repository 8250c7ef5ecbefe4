"""Run the fake Discord by hand: `python -m tests.fakes.discord [--port 8765]`, then start the bot against it.

It creates a demo guild with a #general channel, an ordinary member "alice" and a moderator "mod", prints the
environment to give the bot, and reads commands on stdin:

    /imagine prompt="a red fox" count=2       run a slash command as alice
    mod /quota set member=@alice credits=5    ...as mod ("group sub" words come before the options)
    click MESSAGE_ID CUSTOM_ID                press a button (as alice; prefix "mod" to press as mod)
    modal CUSTOM_ID prompt="a blue fox"       submit the modal the bot opened
    show                                      what the bot sent
    errors                                    spec violations and protocol errors
    quit

Option values: numbers, true/false, @alice / @mod for members, #general for the channel, anything else is text.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shlex
import sys
from typing import Any

from . import MANAGE_GUILD, FakeChannel, FakeDiscord, FakeMember, InvalidCommandInput
from .models import DEFAULT_EVERYONE_PERMISSIONS

log = logging.getLogger(__name__)


async def main(host: str, port: int) -> None:
    """Serve until `quit` or end of input."""
    fake = FakeDiscord()
    await fake.start(host, port)
    try:
        guild = fake.add_guild(name="Demo Server")
        channel = fake.add_channel(guild, name="general")
        members = {
            "alice": fake.add_member(guild, username="alice"),
            "mod": fake.add_member(guild, username="mod", permissions=DEFAULT_EVERYONE_PERMISSIONS | MANAGE_GUILD),
        }
        print(f"DISCORD_API_URL={fake.api_url}")
        print(f"DISCORD_GATEWAY_URL={fake.gateway_url}")
        print(f"DISCORD_TOKEN={fake.token}")
        print(f"DISCORD_GUILD_ID={guild.id}")
        print("Waiting for a bot; type 'help' for commands.", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() in ("quit", "exit"):
                return
            try:
                await _run(fake, channel, members, line.strip())
            except (InvalidCommandInput, RuntimeError, TimeoutError, ValueError, KeyError) as error:
                print(f"! {error}")
    finally:
        await fake.close()


async def _run(fake: FakeDiscord, channel: FakeChannel, members: dict[str, FakeMember], line: str) -> None:
    words = shlex.split(line)
    if not words:
        return
    member = members["alice"]
    if words[0] in members:
        member = members[words.pop(0)]
    command, rest = words[0], words[1:]
    if command == "help":
        print(__doc__)
    elif command == "show":
        _show(fake, channel)
    elif command == "errors":
        for problem in fake.spec_violations + fake.protocol_errors:
            print(problem)
    elif command == "click":
        message = fake.message_by_id(int(rest[0]))
        if message is None:
            raise ValueError(f"no message {rest[0]}")
        interaction = await fake.click(member, channel, message, rest[1])
        await _report(interaction)
    elif command == "modal":
        values = dict(word.split("=", 1) for word in rest[1:])
        await _report(await fake.submit_modal(member, channel, rest[0], values))
    elif command.startswith("/"):
        path = [w for w in rest if "=" not in w]
        options = {k: _value(v, members, channel) for k, v in (w.split("=", 1) for w in rest if "=" in w)}
        subcommand = " ".join(path) or None
        await _report(await fake.invoke(member, channel, command[1:], subcommand=subcommand, options=options))
    else:
        print("? type 'help'")


def _value(text: str, members: dict[str, FakeMember], channel: FakeChannel) -> Any:
    if text.startswith("@") and text[1:] in members:
        return members[text[1:]]
    if text == f"#{channel.name}":
        return channel
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


async def _report(interaction: Any) -> None:
    try:
        callback = await interaction.wait_for_callback(timeout=5)
    except TimeoutError:
        print(f"interaction {interaction.id}: no response yet (try 'show' later)")
        return
    print(f"interaction {interaction.id}: responded with type {callback.get('type')}")


def _show(fake: FakeDiscord, channel: FakeChannel) -> None:
    for interaction in fake.interactions.values():
        for message in interaction.messages:
            _print_message(f"/{interaction.data.get('name') or interaction.data.get('custom_id')}", message)
        if interaction.modal:
            print(f"  modal {interaction.modal['custom_id']!r}: {interaction.modal.get('title')}")
    for message in fake.channel_messages(channel):
        _print_message(f"#{channel.name}", message)


def _print_message(where: str, message: Any) -> None:
    flags = " (ephemeral)" if message.ephemeral else ""
    print(f"[{where}] message {message.id}{flags}: {message.content!r}")
    for attachment in message.attachments:
        print(f"  file {attachment.filename} ({attachment.size} bytes) alt={attachment.description!r}")
    for row in message.components:
        for item in row.get("components") or []:
            print(f"  button {item.get('label')!r} custom_id={item.get('custom_id')!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run the fake Discord for a bot to connect to.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(arguments.host, arguments.port))
