"""Channel routes: channel and DM messages, GET /channels/{id}, opening a DM."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from .errors import DiscordHTTPError
from .messages import check_files, check_message_body, edit_message, new_message
from .models import DEFAULT_ATTACHMENT_SIZE_LIMIT, MESSAGE_FLAG_EPHEMERAL, FakeChannel, FakeMessage
from .rest import API_PREFIX, RestContext, json_response, no_content

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger(__name__)


class ChannelRoutes:
    """Messages the bot posts in channels and DMs (also edits of its interaction messages via the channel)."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.context = RestContext(fake)

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Register the routes."""
        p = API_PREFIX
        router.add_get(f"{p}/channels/{{channel_id}}", self.get_channel)
        router.add_post(f"{p}/channels/{{channel_id}}/messages", self.create_message)
        router.add_get(f"{p}/channels/{{channel_id}}/messages/{{message_id}}", self.get_message)
        router.add_patch(f"{p}/channels/{{channel_id}}/messages/{{message_id}}", self.edit_message)
        router.add_delete(f"{p}/channels/{{channel_id}}/messages/{{message_id}}", self.delete_message)
        router.add_post(f"{p}/users/@me/channels", self.open_dm)

    def _channel(self, request: web.Request) -> FakeChannel:
        channel = self.fake.channel_by_id(int(request.match_info["channel_id"]))
        if channel is None:
            raise DiscordHTTPError(404, 10003, "Unknown Channel", problem="unknown channel")
        return channel

    def _message(self, request: web.Request, channel: FakeChannel) -> FakeMessage:
        message = self.fake.message_by_id(int(request.match_info["message_id"]))
        # Ephemeral messages exist only for their interaction's token.
        if message is None or message.channel_id != channel.id or message.deleted or message.ephemeral:
            raise DiscordHTTPError(404, 10008, "Unknown Message", problem=f"message {request.match_info['message_id']}")
        return message

    async def get_channel(self, request: web.Request) -> web.Response:
        """GET /channels/{id}."""
        return json_response(self.fake.channel_payload(self._channel(request)))

    async def create_message(self, request: web.Request) -> web.Response:
        """POST /channels/{id}/messages."""
        body = await self.context.body(request)
        channel = self._channel(request)
        self._check_can_send(channel)
        check_files(body.files, self._file_size_limit(channel))
        self.context.validate(request, body.json)
        data = body.json if isinstance(body.json, dict) else {}
        check_message_body(data, body.files, creating=True)
        message = new_message(
            data,
            body.files,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author_id=self.fake.bot_user_id,
            attachment_url=self.fake.attachment_url,
        )
        message.flags &= ~MESSAGE_FLAG_EPHEMERAL  # only interaction responses can be ephemeral
        self.fake.remember_message(message, posted_in=channel)
        return json_response(self.fake.message_payload(message))

    def _check_can_send(self, channel: FakeChannel) -> None:
        if channel.type == 1:
            member = self.fake.member_by_id(channel.recipient_id or 0)
            if member is None or not member.accepts_dms:
                raise DiscordHTTPError(
                    403,
                    50007,
                    "Cannot send messages to this user",
                    problem=f"DM to user {channel.recipient_id}, who does not accept DMs",
                )
        elif not channel.bot_can_send:
            raise DiscordHTTPError(
                403, 50013, "Missing Permissions", problem=f"message in #{channel.name}, where the bot may not send"
            )

    def _file_size_limit(self, channel: FakeChannel) -> int:
        guild = self.fake.guild_by_id(channel.guild_id) if channel.guild_id is not None else None
        return guild.attachment_size_limit if guild is not None else DEFAULT_ATTACHMENT_SIZE_LIMIT

    async def get_message(self, request: web.Request) -> web.Response:
        """GET /channels/{id}/messages/{id}."""
        channel = self._channel(request)
        return json_response(self.fake.message_payload(self._message(request, channel)))

    async def edit_message(self, request: web.Request) -> web.Response:
        """PATCH /channels/{id}/messages/{id}."""
        body = await self.context.body(request)
        channel = self._channel(request)
        message = self._message(request, channel)
        if message.author_id != self.fake.bot_user_id:  # interaction responses are the bot's own
            raise DiscordHTTPError(
                403,
                50005,
                "Cannot edit a message authored by another user",
                problem=f"edit of message {message.id}, which the bot did not write",
            )
        check_files(body.files, self._file_size_limit(channel))
        self.context.validate(request, body.json)
        data = body.json if isinstance(body.json, dict) else {}
        check_message_body(data, body.files, creating=False)
        edit_message(message, data, body.files, self.fake.attachment_url)
        return json_response(self.fake.message_payload(message))

    async def delete_message(self, request: web.Request) -> web.Response:
        """DELETE /channels/{id}/messages/{id}."""
        channel = self._channel(request)
        self.fake.delete_message(self._message(request, channel))
        return no_content()

    async def open_dm(self, request: web.Request) -> web.Response:
        """POST /users/@me/channels {recipient_id}: the DM channel with a member."""
        body = await self.context.body(request)
        self.context.validate(request, body.json)
        recipient = (body.json or {}).get("recipient_id")
        member = self.fake.member_by_id(int(recipient)) if recipient is not None else None
        if member is None:
            raise DiscordHTTPError(404, 10013, "Unknown User", problem=f"DM with unknown user {recipient}")
        return json_response(self.fake.channel_payload(self.fake.dm_channel(member)))
