"""A fake Discord (REST + gateway) on loopback that a real discord.py client connects to.

Use::

    async with FakeDiscord() as fake:
        guild = fake.add_guild()
        channel = fake.add_channel(guild)
        alice = fake.add_member(guild, username="alice")
        mod = fake.add_member(guild, username="mod", permissions=DEFAULT_EVERYONE_PERMISSIONS | MANAGE_GUILD)
        # Point the bot at it: DISCORD_API_URL=fake.api_url, DISCORD_GATEWAY_URL=fake.gateway_url,
        # DISCORD_TOKEN=fake.token (in-process: discord.http.Route.BASE = fake.api_url and
        # discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url); restore them after).
        await fake.wait_until_ready(wait_for_commands=True)
        interaction = await fake.invoke(alice, channel, "imagine", options={"prompt": "a cat", "count": 2})
        await interaction.wait_for(lambda i: i.original is not None and not i.original.loading)
        assert interaction.original.attachments[0].data.startswith(b"\x89PNG")
        fake.assert_clean()

What the fake holds the bot to (each breach answered as Discord does and recorded):
- `spec_violations`: request bodies Discord's OpenAPI description rejects (answered 400/50035).
- `protocol_errors`: "CODE: METHOD PATH: what happened", CODE being Discord's error code, so a test can filter:
  10062 late first response, 40060 second response, 10015 webhook before any response, 50027 token expired,
  40005 file or request too large, 50035 more than 10 files / content over 2000 / embeds over 6000 / invalid
  callback type, 50006 empty message, 50013 channel the bot may not send in, 50007 member with DMs closed,
  10008 unknown or deleted message, 0 wrong bot token, 404/405 route the fake does not have; and
  "unanswered: ..." for an interaction left without a first response past the deadline.

Time: interactions older than `token_lifetime` get 50027; `FakeInteraction.expire_token()` does it at once.
Run by hand: `python -m tests.fakes.discord --port 8765` (prints the environment for the bot, small REPL).
"""

from __future__ import annotations

from .errors import InvalidCommandInput
from .models import (
    ADMINISTRATOR,
    DEFAULT_EVERYONE_PERMISSIONS,
    MANAGE_GUILD,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeRole,
    RecordedFile,
    RecordedRequest,
)
from .server import FakeDiscord

__all__ = [
    "ADMINISTRATOR",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "MANAGE_GUILD",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "InvalidCommandInput",
    "RecordedFile",
    "RecordedRequest",
]
