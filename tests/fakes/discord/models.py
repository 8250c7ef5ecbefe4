"""The fake Discord's records: guilds, roles, channels, members, messages, interactions, requests.

Each record also renders itself as the JSON Discord would send for it, so the gateway and REST layers stay thin.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .mentions import would_ping

log = logging.getLogger(__name__)

DISCORD_EPOCH_MS = 1_420_070_400_000
_counter = itertools.count()


def new_snowflake() -> int:
    """Mint an id from the current time, as Discord does (discord.py derives `created_at` from it)."""
    ms = time.time_ns() // 1_000_000
    return ((ms - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF)


def iso(moment: datetime) -> str:
    """Discord's timestamp format."""
    return moment.astimezone(UTC).isoformat()


# Permission bits (https://discord.com/developers/docs/topics/permissions).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
STREAM = 1 << 9
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
USE_VAD = 1 << 25
CHANGE_NICKNAME = 1 << 26
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
USE_EXTERNAL_STICKERS = 1 << 37
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 53) - 1

# What @everyone gets in a new server.
DEFAULT_EVERYONE_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | STREAM
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | USE_VAD
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | USE_EXTERNAL_STICKERS
    | SEND_MESSAGES_IN_THREADS
)
# What the bot's managed role grants (the invite link's permissions).
DEFAULT_BOT_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | SEND_MESSAGES_IN_THREADS
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | ADD_REACTIONS
)
# Denied to the bot in a channel created with bot_can_send=False.
SEND_PERMISSIONS = SEND_MESSAGES | SEND_MESSAGES_IN_THREADS | EMBED_LINKS | ATTACH_FILES

DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
MESSAGE_FLAG_EPHEMERAL = 1 << 6
MESSAGE_FLAG_LOADING = 1 << 7


def user_payload(user_id: int, username: str, *, bot: bool = False) -> dict[str, Any]:
    """A user object."""
    return {
        "id": str(user_id),
        "username": username,
        "global_name": None if bot else username.title(),
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
    }


@dataclass(eq=False)
class FakeRole:
    """A role of a guild. The @everyone role has the guild's id."""

    id: int
    guild_id: int
    name: str
    permissions: int = 0
    position: int = 0
    bot_id: int | None = None  # set on the bot's managed role

    @property
    def mention(self) -> str:
        """How to mention the role in message content."""
        return f"<@&{self.id}>"

    def to_payload(self) -> dict[str, Any]:
        """The role object."""
        payload: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "managed": self.bot_id is not None,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            payload["tags"] = {"bot_id": str(self.bot_id)}
        return payload


@dataclass(eq=False)
class FakeChannel:
    """A guild text channel (type 0) or a DM channel (type 1)."""

    id: int
    name: str
    guild_id: int | None = None
    type: int = 0
    bot_can_send: bool = True
    position: int = 0
    recipient_id: int | None = None  # DM channels
    bot_user_id: int | None = None

    @property
    def mention(self) -> str:
        """How to mention the channel in message content."""
        return f"<#{self.id}>"

    def to_payload(self) -> dict[str, Any]:
        """The channel object, as in GUILD_CREATE and GET /channels/{id}."""
        if self.type == 1:
            return {"id": str(self.id), "type": 1, "last_message_id": None, "flags": 0, "recipients": []}
        overwrites = []
        if not self.bot_can_send and self.bot_user_id is not None:
            overwrites.append({"id": str(self.bot_user_id), "type": 1, "allow": "0", "deny": str(SEND_PERMISSIONS)})
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": overwrites,
            "topic": None,
            "nsfw": False,
            "parent_id": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }


@dataclass(eq=False)
class FakeMember:
    """A member of a guild (a person; the bot's own member is rendered separately)."""

    id: int
    guild_id: int
    username: str
    roles: list[FakeRole]  # the roles given to the member (@everyone is implied)
    everyone: FakeRole
    permission_override: int | None = None  # when set, the permissions interactions carry, whatever the roles
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    nick: str | None = None
    accepts_dms: bool = True  # False: sending them a DM fails with 50007, like a member who closed DMs
    left: bool = False  # True: they left the server; an option naming them resolves to the user alone

    @property
    def permissions(self) -> int:
        """The permissions Discord computes for the member (`member.permissions` of an interaction)."""
        if self.permission_override is not None:
            value = self.permission_override
            return ALL_PERMISSIONS if value & ADMINISTRATOR else value
        value = self.everyone.permissions
        for role in self.roles:
            value |= role.permissions
        return ALL_PERMISSIONS if value & ADMINISTRATOR else value

    @property
    def mention(self) -> str:
        """How to mention the member in message content."""
        return f"<@{self.id}>"

    def user_payload(self) -> dict[str, Any]:
        """The user object."""
        return user_payload(self.id, self.username)

    def to_payload(self, *, with_user: bool = True, with_permissions: bool = False) -> dict[str, Any]:
        """The guild member object (with `permissions` as interactions carry it)."""
        payload: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles if r.id != self.guild_id],
            "joined_at": iso(self.joined_at),
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "communication_disabled_until": None,
            "flags": 0,
            "deaf": False,
            "mute": False,
            "pending": False,
        }
        if with_user:
            payload["user"] = self.user_payload()
        if with_permissions:
            payload["permissions"] = str(self.permissions)
        return payload


@dataclass(eq=False)
class FakeGuild:
    """A guild, with its roles (the first is @everyone, id == guild id), channels and members."""

    id: int
    name: str
    owner_id: int
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT
    roles: list[FakeRole] = field(default_factory=list)
    channels: list[FakeChannel] = field(default_factory=list)
    members: list[FakeMember] = field(default_factory=list)
    joined_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    locale: str = "en-US"

    @property
    def everyone(self) -> FakeRole:
        """The @everyone role."""
        return self.roles[0]

    @property
    def bot_role(self) -> FakeRole | None:
        """The bot's managed role."""
        return next((r for r in self.roles if r.bot_id is not None), None)

    def bot_permissions(self, channel: FakeChannel) -> int:
        """The bot's permissions in a channel of this guild (app_permissions of an interaction)."""
        value = self.everyone.permissions
        for role in self.roles:
            if role.bot_id is not None:
                value |= role.permissions
        if value & ADMINISTRATOR:
            return ALL_PERMISSIONS
        if not channel.bot_can_send:
            value &= ~SEND_PERMISSIONS
        return value

    def bot_member_payload(self, bot_user_id: int, bot_name: str) -> dict[str, Any]:
        """The bot's own member object."""
        role = self.bot_role
        return {
            "user": user_payload(bot_user_id, bot_name, bot=True),
            "roles": [str(role.id)] if role else [],
            "joined_at": iso(self.joined_at),
            "nick": None,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "communication_disabled_until": None,
            "flags": 0,
            "deaf": False,
            "mute": False,
            "pending": False,
        }

    def to_payload(self, *, bot_member: dict[str, Any], with_members: bool) -> dict[str, Any]:
        """The full guild object of GUILD_CREATE."""
        members = [bot_member]
        if with_members:
            members += [m.to_payload() for m in self.members]
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.locale,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "widget_enabled": False,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "application_id": None,
            "features": [],
            "roles": [r.to_payload() for r in self.roles],
            "emojis": [],
            "stickers": [],
            "channels": [c.to_payload() for c in self.channels],
            "threads": [],
            "members": members,
            "member_count": len(self.members) + 1,
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "incidents_data": None,
            "large": False,
            "unavailable": False,
            "lazy": True,
            "joined_at": iso(self.joined_at),
        }


@dataclass(eq=False)
class FakeAttachment:
    """A file attached to a message."""

    id: int
    filename: str
    data: bytes
    content_type: str | None
    description: str | None = None  # alt text
    url: str = ""

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def to_payload(self) -> dict[str, Any]:
        """The attachment object."""
        payload: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
            "flags": 0,
        }
        if self.description is not None:
            payload["description"] = self.description
        return payload


@dataclass(eq=False)
class FakeMessage:
    """A message the bot sent: to a channel, a DM, or as an interaction response or followup."""

    id: int
    channel_id: int
    author_id: int
    guild_id: int | None = None
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    flags: int = 0
    attachments: list[FakeAttachment] = field(default_factory=list)
    allowed_mentions: dict[str, Any] | None = None  # as the bot last sent it; None when it never sent one
    tts: bool = False
    deleted: bool = False
    edits: int = 0
    webhook_token: str | None = None  # the interaction token, for interaction responses and followups
    application_id: int | None = None
    interaction_id: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    edited_at: datetime | None = None

    @property
    def ephemeral(self) -> bool:
        """Whether only the invoker sees it (flag 64)."""
        return bool(self.flags & MESSAGE_FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """Whether it is still the "thinking..." placeholder of a deferred response (flag 128)."""
        return bool(self.flags & MESSAGE_FLAG_LOADING)

    @property
    def mentions_would_ping(self) -> set[str]:
        """The mentions in the content that would notify someone given `allowed_mentions` (embeds never ping).

        Members of the set: "@everyone", "@here", "<@USER_ID>", "<@&ROLE_ID>".
        """
        return would_ping(self.content, self.allowed_mentions)

    def to_payload(self, author: dict[str, Any]) -> dict[str, Any]:
        """The message object."""
        payload: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": 0,
            "author": author,
            "content": self.content,
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at) if self.edited_at else None,
            "tts": self.tts,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.to_payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "flags": self.flags,
        }
        if self.guild_id is not None:
            payload["guild_id"] = str(self.guild_id)
        if self.application_id is not None:
            payload["webhook_id"] = str(self.application_id)
            payload["application_id"] = str(self.application_id)
        return payload


@dataclass(frozen=True)
class RecordedFile:
    """A file part of a multipart request."""

    name: str  # the form field, e.g. "files[0]"
    filename: str
    data: bytes
    content_type: str | None


@dataclass
class RecordedRequest:
    """A REST request the bot made."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any  # the JSON body, or the payload_json of a multipart body; None when there was none
    files: list[RecordedFile]
    time: float  # time.monotonic() when it arrived
    wall_time: datetime
    route: str | None = None  # the route template, e.g. "/channels/{channel_id}/messages"
    status: int | None = None  # the status the fake answered


class ChangeSignal:
    """Wakes coroutines waiting for a condition on the fake's state, each time the bot changes something."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        """Wake every waiter so that it re-checks its condition."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Return once `predicate()` is true, re-checked on each change; raise TimeoutError after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)


@dataclass(eq=False)
class FakeInteraction:
    """An interaction the fake sent to the bot, and everything the bot answered on it.

    `callbacks` holds the callbacks the fake accepted; refused ones (late, double...) are in `rejected_callbacks`
    and in the fake's `protocol_errors`.
    """

    id: int
    token: str
    type: int
    member: FakeMember
    channel: FakeChannel
    guild: FakeGuild
    application_id: int
    data: dict[str, Any]
    payload: dict[str, Any]  # the whole INTERACTION_CREATE `d`
    attachment_size_limit: int
    signal: ChangeSignal
    message: FakeMessage | None = None  # the message a component was on, or a modal was opened from
    created_at: float = field(default_factory=time.monotonic)  # monotonic: when the fake sent it
    created_at_wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    rejected_callbacks: list[dict[str, Any]] = field(default_factory=list)
    responded_at: float | None = None  # monotonic time of the accepted callback
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    ephemeral: bool = False
    modal: dict[str, Any] | None = None
    autocomplete_choices: list[dict[str, Any]] | None = None
    token_expired: bool = False

    @property
    def messages(self) -> list[FakeMessage]:
        """The original response (if any) then the followups, as they are now; deleted ones left out."""
        found = [self.original] if self.original is not None else []
        found += self.followups
        return [m for m in found if not m.deleted]

    @property
    def deleted(self) -> bool:
        """Whether the original response was deleted."""
        return self.original is not None and self.original.deleted

    @property
    def response_delay(self) -> float | None:
        """Seconds between sending the interaction and the accepted first response, if there was one."""
        return None if self.responded_at is None else self.responded_at - self.created_at

    def expire_token(self) -> None:
        """Make the token expire now, as if `token_lifetime` had passed (webhook calls then get 401/50027)."""
        self.token_expired = True

    async def wait_for_callback(self, timeout: float = 5) -> dict[str, Any]:
        """Return the first accepted callback body, waiting for it if needed."""
        await self.wait_for(lambda i: bool(i.callbacks), timeout)
        return self.callbacks[0]

    async def wait_for(self, predicate: Callable[[FakeInteraction], bool], timeout: float = 30) -> None:
        """Return once `predicate(self)` holds; it is re-checked after every bot request."""
        await self.signal.wait_for(lambda: predicate(self), timeout, f"a condition on interaction {self.id}")
