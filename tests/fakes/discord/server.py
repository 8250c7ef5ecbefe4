"""FakeDiscord: a Discord (REST + gateway) on loopback that a real discord.py client connects to.

The test builds the world (guilds, channels, roles, members), drives what members do (slash commands, button
clicks, modal submits, autocomplete) and inspects what the bot sent. Every request body is checked against
Discord's OpenAPI description, and every Discord rule the bot breaks is answered as Discord would and recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiohttp import web

from .channels import ChannelRoutes
from .commands import CommandRegistry, check_usable_in_guild, command_data
from .errors import InvalidCommandInput
from .gateway import Gateway
from .interactions import find_component, interaction_payload, modal_answers, new_interaction_token
from .models import (
    DEFAULT_ATTACHMENT_SIZE_LIMIT,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    ChangeSignal,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeInteraction,
    FakeMember,
    FakeMessage,
    FakeRole,
    RecordedRequest,
    new_snowflake,
    user_payload,
)
from .rest import build_app
from .spec import SpecError, SpecValidator
from .webhooks import APPLICATION_COMMAND, AUTOCOMPLETE, MESSAGE_COMPONENT, MODAL_SUBMIT, InteractionRoutes

log = logging.getLogger(__name__)

BOT_NAME = "ImagineBot"
GUILD_TEXT = 0


class FakeDiscord:
    """A fake Discord for end-to-end tests; see tests/fakes/discord/__init__.py for how to use it."""

    def __init__(
        self,
        *,
        bot_user_id: int | None = None,
        application_id: int | None = None,
        token: str = "fake-token",
        request_size_limit: int = 25 * 1024 * 1024,
        token_lifetime: float = 15 * 60,
        first_response_deadline: float = 3.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.bot_user_id = bot_user_id or new_snowflake()
        # Applications made since 2020 share their id with their bot user.
        self.application_id = application_id or self.bot_user_id
        self.bot_name = BOT_NAME
        self.token = token
        self.request_size_limit = request_size_limit
        self.token_lifetime = token_lifetime
        self.first_response_deadline = first_response_deadline
        # Served over HTTPS and WSS with this context (the client must trust its certificate), else plain.
        self.ssl_context = ssl_context
        # Seconds an interaction callback takes to be applied after it arrived (a slow network or Discord): the
        # interaction has no response, so no "@original", until then.
        self.callback_delay = 0.0

        self.guilds: list[FakeGuild] = []
        self.interactions: dict[int, FakeInteraction] = {}
        self.registry = CommandRegistry(self.application_id)
        self.spec = SpecValidator()
        self.spec_violations: list[str] = []
        # Check one body in this many per route against the spec (1: all). Tests check all, as they arrive.
        self.validate_one_in = 1
        # With validate_later, bodies are kept and checked by validate_deferred() instead of as they arrive (so
        # not refused with a 400): the burst benchmark's fake then costs no CPU for checks beside the bot under
        # test (validating one message body costs the fake more than the bot spends posting it).
        self.validate_later = False
        self.deferred_bodies: list[tuple[str, str, Any]] = []
        self.bodies_seen: Counter[tuple[str, str]] = Counter()
        self.bodies_validated = 0
        self.protocol_errors: list[str] = []
        # 429s to answer, in order, to the next requests matching (method, route prefix): see rate_limit_next().
        self.pending_rate_limits: list[tuple[str, str, float]] = []
        # Answers to hold back after the request took effect: see hold_answer_next().
        self.pending_holds: list[tuple[str, str, float]] = []
        # Server errors to answer instead of carrying out a request: see fail_next().
        self.pending_failures: list[tuple[str, str, int, int, str]] = []
        self.requests: list[RecordedRequest] = []
        self.signal = ChangeSignal()
        self.gateway = Gateway(self)

        self.api_url = ""
        self.gateway_url = ""
        self.base_url = ""
        self._by_token: dict[str, FakeInteraction] = {}
        self._messages: dict[int, FakeMessage] = {}
        self._posted: dict[int, list[FakeMessage]] = {}
        self._dm_channels: dict[int, FakeChannel] = {}
        self._pending: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 = any free port); `api_url` and `gateway_url` are set afterwards."""
        app = build_app(self, [InteractionRoutes(self), ChannelRoutes(self)])
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await site.start()
        bound_port = self._runner.addresses[0][1]
        secure = "s" if self.ssl_context is not None else ""
        self.base_url = f"http{secure}://{host}:{bound_port}"
        self.api_url = f"{self.base_url}/api/v10"
        self.gateway_url = f"ws{secure}://{host}:{bound_port}/gateway"
        log.info("fake Discord listening: REST %s, gateway %s", self.api_url, self.gateway_url)

    async def close(self) -> None:
        """Drop the bot's connections and stop listening."""
        for timer in self._timers:
            timer.cancel()
        await self.settle()
        await self.gateway.disconnect(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def attachment_url(self) -> str:
        """Where attachments are served: `{attachment_url}/{channel_id}/{attachment_id}/{filename}`."""
        return f"{self.base_url}/attachments"

    # --- the world ---

    def add_guild(
        self, *, name: str = "Test Server", attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT
    ) -> FakeGuild:
        """A guild the bot is in, with @everyone and the bot's managed role."""
        guild_id = new_snowflake()
        guild = FakeGuild(id=guild_id, name=name, owner_id=new_snowflake(), attachment_size_limit=attachment_size_limit)
        guild.roles.append(FakeRole(guild_id, guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS, 0))
        guild.roles.append(
            FakeRole(new_snowflake(), guild_id, self.bot_name, DEFAULT_BOT_PERMISSIONS, 1, self.bot_user_id)
        )
        self.guilds.append(guild)
        self._tell_bot("GUILD_CREATE", lambda: self._guild_payload(guild, with_members=True))
        return guild

    def add_channel(self, guild: FakeGuild, *, name: str = "general", bot_can_send: bool = True) -> FakeChannel:
        """A text channel; with bot_can_send=False the bot's messages there are refused (403/50013)."""
        channel = FakeChannel(
            id=new_snowflake(),
            name=name,
            guild_id=guild.id,
            type=GUILD_TEXT,
            bot_can_send=bot_can_send,
            position=len(guild.channels),
            bot_user_id=self.bot_user_id,
        )
        guild.channels.append(channel)
        self._tell_bot("CHANNEL_CREATE", channel.to_payload)
        return channel

    def add_role(self, guild: FakeGuild, *, name: str, permissions: int = 0) -> FakeRole:
        """A role (give it to members with add_member(roles=...))."""
        role = FakeRole(new_snowflake(), guild.id, name, permissions, len(guild.roles))
        guild.roles.append(role)
        self._tell_bot("GUILD_ROLE_CREATE", lambda: {"guild_id": str(guild.id), "role": role.to_payload()})
        return role

    def add_member(
        self,
        guild: FakeGuild,
        *,
        username: str | None = None,
        roles: list[FakeRole] | tuple[FakeRole, ...] = (),
        permissions: int | None = None,
        user_id: int | None = None,
    ) -> FakeMember:
        """A member. `permissions` is what interactions carry as member.permissions (default: from the roles,
        i.e. @everyone's View/Send/Attach/Embed/... and no Manage Guild); bits the roles lack are granted through
        an extra role named "<username> permissions", so that discord.py's `guild_permissions` agrees.
        """
        number = sum(len(g.members) for g in self.guilds) + 1
        member = FakeMember(
            id=user_id or new_snowflake(),
            guild_id=guild.id,
            username=username or f"member{number}",
            roles=list(roles),
            everyone=guild.everyone,
        )
        if permissions is not None:
            missing = permissions & ~member.permissions
            if missing:
                member.roles.append(self.add_role(guild, name=f"{member.username} permissions", permissions=missing))
            member.permission_override = permissions
        guild.members.append(member)
        self._tell_bot("GUILD_MEMBER_ADD", lambda: {**member.to_payload(), "guild_id": str(guild.id)})
        return member

    def dm_channel(self, member: FakeMember) -> FakeChannel:
        """The DM channel between the bot and a member (what POST /users/@me/channels opens)."""
        if member.id not in self._dm_channels:
            self._dm_channels[member.id] = FakeChannel(
                id=new_snowflake(), name=f"dm-{member.username}", type=1, recipient_id=member.id
            )
        return self._dm_channels[member.id]

    # --- what the bot did ---

    @property
    def commands(self) -> dict[int | None, dict[str, dict[str, Any]]]:
        """Synced commands: {None: global, guild_id: that guild's}, each {name: command as Discord stores it}."""
        return self.registry.commands

    @property
    def command_puts(self) -> Counter[int | None]:
        """How many bulk overwrites (PUT) the bot made per scope (None = global)."""
        return self.registry.puts

    def channel_messages(self, channel: FakeChannel) -> list[FakeMessage]:
        """Messages the bot posted with POST /channels/{id}/messages (deleted ones included, flagged)."""
        return list(self._posted.get(channel.id, []))

    def dm_messages(self, member: FakeMember) -> list[FakeMessage]:
        """Messages the bot sent to a member by DM."""
        channel = self._dm_channels.get(member.id)
        return [] if channel is None else self.channel_messages(channel)

    def check_body(self, template: str, method: str, body: Any) -> list[SpecError]:
        """Check one body against the OpenAPI description, counting it and recording its violations; the errors."""
        self.bodies_validated += 1
        errors = self.spec.validate(template, method, body)
        self.spec_violations.extend(f"{method} {template}: {error}" for error in errors)
        return errors

    def validate_deferred(self) -> int:
        """Check the bodies kept while ``validate_later`` was set (recording violations, refusing none); how many."""
        kept, self.deferred_bodies = self.deferred_bodies, []
        for template, method, body in kept:
            self.check_body(template, method, body)
        return len(kept)

    def assert_clean(self) -> None:
        """Raise AssertionError listing every spec violation and protocol error, if any."""
        problems = [f"spec: {v}" for v in self.spec_violations] + [f"protocol: {e}" for e in self.protocol_errors]
        if problems:
            raise AssertionError("the bot broke Discord's rules:\n" + "\n".join(problems))

    async def wait_until_ready(self, timeout: float = 30, *, wait_for_commands: bool = False) -> None:
        """Return once a bot identified on the gateway and got its guilds (and synced commands, if asked)."""
        try:
            await asyncio.wait_for(self.gateway.ready.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no bot identified on the fake gateway within {timeout} s") from None
        if wait_for_commands:
            await self.wait_for_commands(timeout)

    async def wait_for_commands(self, timeout: float = 30, *, count: int = 1) -> None:
        """Return once the bot has made `count` command syncs (PUTs), global and guild together."""
        await self.wait_for(lambda: self.registry.total_puts() >= count, timeout, f"{count} command sync(s)")

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "a condition") -> None:
        """Return once `predicate()` holds; it is re-checked after every bot request and gateway change."""
        await self.signal.wait_for(predicate, timeout, what)

    async def disconnect_bot(self) -> None:
        """Drop the bot's gateway connection (an in-process discord.py client reconnects and identifies again)."""
        await self.gateway.disconnect()

    # --- what members do ---

    async def invoke(
        self,
        member: FakeMember,
        channel: FakeChannel,
        command: str,
        *,
        subcommand: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> FakeInteraction:
        """A member runs a slash command (`subcommand` may be "group sub"); InvalidCommandInput if Discord's
        client would not let them send it."""
        guild = self._guild_of(member, channel)
        definition = self.registry.find(guild.id, command)
        check_usable_in_guild(definition, member)
        data = command_data(definition, member, subcommand=subcommand, options=options or {})
        return await self._send_interaction(APPLICATION_COMMAND, member, channel, data)

    async def autocomplete(
        self,
        member: FakeMember,
        channel: FakeChannel,
        command: str,
        *,
        focused: str,
        options: dict[str, Any],
        subcommand: str | None = None,
    ) -> list[dict[str, Any]]:
        """A member types in option `focused`; return the choices the bot answered (TimeoutError after 3 s)."""
        guild = self._guild_of(member, channel)
        definition = self.registry.find(guild.id, command)
        check_usable_in_guild(definition, member)
        data = command_data(definition, member, subcommand=subcommand, options=options, focused=focused)
        interaction = await self._send_interaction(AUTOCOMPLETE, member, channel, data)
        try:
            await interaction.wait_for(lambda i: i.autocomplete_choices is not None, self.first_response_deadline)
        except TimeoutError:
            raise TimeoutError(
                f"the bot gave no autocomplete choices for /{command} {focused} within {self.first_response_deadline} s"
            ) from None
        return interaction.autocomplete_choices or []

    async def click(
        self, member: FakeMember, channel: FakeChannel, message: FakeMessage, custom_id: str
    ) -> FakeInteraction:
        """A member presses the button `custom_id` on a message the bot sent."""
        if message.deleted:
            raise InvalidCommandInput(f"message {message.id} was deleted: nothing to click")
        if message.channel_id != channel.id:
            raise InvalidCommandInput(f"message {message.id} is not in #{channel.name}")
        creator = self.interactions.get(message.interaction_id or 0)
        if message.ephemeral and creator is not None and creator.member is not member:
            raise InvalidCommandInput(f"message {message.id} is ephemeral: only {creator.member.username} sees it")
        component = find_component(message.components, custom_id)
        if component is None:
            raise InvalidCommandInput(f"message {message.id} has no component with custom_id {custom_id!r}")
        if component.get("disabled"):
            raise InvalidCommandInput(f"the component {custom_id!r} is disabled")
        data = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] != 2:
            data["values"] = []
        return await self._send_interaction(MESSAGE_COMPONENT, member, channel, data, message=message)

    async def submit_modal(
        self,
        member: FakeMember,
        channel: FakeChannel,
        custom_id: str,
        values: dict[str, str],
        *,
        message: FakeMessage | None = None,
    ) -> FakeInteraction:
        """A member submits the modal `custom_id` the bot opened; `values` maps text input custom_id -> text
        (inputs left out keep their prefilled value)."""
        opener = next(
            (i for i in reversed(self.interactions.values()) if i.modal and i.modal.get("custom_id") == custom_id),
            None,
        )
        if opener is None or opener.modal is None:
            raise InvalidCommandInput(f"the bot never opened a modal with custom_id {custom_id!r}")
        components = modal_answers(opener.modal, values)
        if message is None and opener.type == MESSAGE_COMPONENT:
            message = opener.message
        data = {"custom_id": custom_id, "components": components}
        return await self._send_interaction(MODAL_SUBMIT, member, channel, data, message=message)

    # --- lookups the routes use ---

    def guild_by_id(self, guild_id: int | None) -> FakeGuild | None:
        """The guild with that id."""
        return next((g for g in self.guilds if g.id == guild_id), None)

    def channel_by_id(self, channel_id: int) -> FakeChannel | None:
        """A guild channel or DM channel by id."""
        for guild in self.guilds:
            for channel in guild.channels:
                if channel.id == channel_id:
                    return channel
        return next((c for c in self._dm_channels.values() if c.id == channel_id), None)

    def member_by_id(self, user_id: int) -> FakeMember | None:
        """A member (of any guild) by user id."""
        return next((m for g in self.guilds for m in g.members if m.id == user_id), None)

    def message_by_id(self, message_id: int) -> FakeMessage | None:
        """Any message the bot sent, by id."""
        return self._messages.get(message_id)

    def interaction_by_token(self, token: str) -> FakeInteraction | None:
        """The interaction an interaction token belongs to."""
        return self._by_token.get(token)

    def find_attachment(self, attachment_id: int) -> FakeAttachment | None:
        """An attachment of any message, by id."""
        for message in self._messages.values():
            for attachment in message.attachments:
                if attachment.id == attachment_id:
                    return attachment
        return None

    def remember_message(self, message: FakeMessage, posted_in: FakeChannel | None = None) -> None:
        """Index a new message (and list it under its channel when posted with POST /channels/{id}/messages)."""
        self._messages[message.id] = message
        if posted_in is not None:
            self._posted.setdefault(posted_in.id, []).append(message)

    def delete_message(self, message: FakeMessage) -> None:
        """Mark a message deleted."""
        message.deleted = True

    def rate_limit_next(self, method: str, route_prefix: str, *, times: int = 1, retry_after: float = 0.2) -> None:
        """Answer the next ``times`` requests whose method and route template (e.g. ``/webhooks/``) match with a
        429, as Discord does: its JSON body (retry_after, global false), Retry-After, the X-RateLimit headers with
        nothing remaining, and ``Via`` (discord.py waits and sends again only when it is there)."""
        self.pending_rate_limits.extend((method.upper(), route_prefix, retry_after) for _ in range(times))

    def fail_next(
        self,
        method: str,
        route_prefix: str,
        *,
        status: int = 500,
        code: int = 0,
        message: str = "500: Internal Server Error",
    ) -> None:
        """Answer the next request whose method and route template match with an error (nothing carried out): a
        500 as Discord gives now and then (discord.py tries a 5xx again, up to five times), or e.g. 404 / 10008
        "Unknown Message" for a message someone deleted meanwhile."""
        self.pending_failures.append((method.upper(), route_prefix, status, code, message))

    def hold_answer_next(self, method: str, route_prefix: str, *, seconds: float) -> None:
        """Carry out the next request whose method and route template match, then hold its answer ``seconds``:
        a bot stopped meanwhile has changed Discord without knowing it."""
        self.pending_holds.append((method.upper(), route_prefix, seconds))

    # --- payloads ---

    def bot_user_payload(self) -> dict[str, Any]:
        """The bot's user object (GET /users/@me)."""
        return {
            **user_payload(self.bot_user_id, self.bot_name, bot=True),
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "locale": "en-US",
        }

    def application_payload(self) -> dict[str, Any]:
        """The application object (GET /oauth2/applications/@me)."""
        return {
            "id": str(self.application_id),
            "name": self.bot_name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 0,
            "owner": user_payload(new_snowflake(), "owner"),
            "team": None,
            "tags": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}},
            "bot": user_payload(self.bot_user_id, self.bot_name, bot=True),
        }

    def message_payload(self, message: FakeMessage) -> dict[str, Any]:
        """A message object, authored by the bot."""
        return message.to_payload(user_payload(self.bot_user_id, self.bot_name, bot=True))

    def channel_payload(self, channel: FakeChannel) -> dict[str, Any]:
        """A channel object (DMs list their recipient)."""
        payload = channel.to_payload()
        if channel.type == 1 and channel.recipient_id is not None:
            member = self.member_by_id(channel.recipient_id)
            payload["recipients"] = [member.user_payload()] if member else []
        return payload

    # GatewayWorld

    def ready_payload(self, session_id: str, shard: list[int] | None) -> dict[str, Any]:
        """The `d` of READY."""
        return {
            "v": 10,
            "user": self.bot_user_payload(),
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds],
            "session_id": session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": shard or [0, 1],
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "_trace": ["fake-discord"],
        }

    def guild_payloads(self, *, with_members: bool) -> list[dict[str, Any]]:
        """The `d` of each GUILD_CREATE after READY."""
        return [self._guild_payload(g, with_members=with_members) for g in self.guilds]

    def member_payloads(self, guild_id: int) -> list[dict[str, Any]]:
        """Every member of a guild, the bot included (GUILD_MEMBERS_CHUNK)."""
        guild = self.guild_by_id(guild_id)
        if guild is None:
            return []
        return [guild.bot_member_payload(self.bot_user_id, self.bot_name)] + [m.to_payload() for m in guild.members]

    def gateway_changed(self) -> None:
        """Wake whoever waits on the fake's state."""
        self.signal.notify()

    def _guild_payload(self, guild: FakeGuild, *, with_members: bool) -> dict[str, Any]:
        bot_member = guild.bot_member_payload(self.bot_user_id, self.bot_name)
        return guild.to_payload(bot_member=bot_member, with_members=with_members)

    # --- internals ---

    def _tell_bot(self, event: str, payload: Callable[[], dict[str, Any]]) -> None:
        """Dispatch a world change to the connected bot, if any (before it connects, GUILD_CREATE carries it)."""
        if self.gateway.current is None:
            return
        self._schedule(self.gateway.dispatch_if_connected(event, payload()))

    def _schedule(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._pending.append(asyncio.get_running_loop().create_task(coroutine))

    async def settle(self) -> None:
        """Wait until world changes made since the bot connected (add_channel...) have been sent to it."""
        pending, self._pending = self._pending, []
        for task in pending:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await task

    def _guild_of(self, member: FakeMember, channel: FakeChannel) -> FakeGuild:
        guild = self.guild_by_id(channel.guild_id)
        if guild is None:
            raise InvalidCommandInput("interactions are sent from guild channels only (add_channel)")
        if member.guild_id != guild.id:
            raise InvalidCommandInput(f"{member.username} is not a member of {guild.name}")
        return guild

    async def _send_interaction(
        self,
        kind: int,
        member: FakeMember,
        channel: FakeChannel,
        data: dict[str, Any],
        *,
        message: FakeMessage | None = None,
    ) -> FakeInteraction:
        await self.settle()
        guild = self._guild_of(member, channel)
        interaction_id = new_snowflake()
        token = new_interaction_token(interaction_id)
        payload = interaction_payload(
            interaction_id,
            token,
            kind,
            data,
            member=member,
            channel=channel,
            guild=guild,
            application_id=self.application_id,
        )
        if message is not None:
            payload["message"] = self.message_payload(message)
        interaction = FakeInteraction(
            id=interaction_id,
            token=token,
            type=kind,
            member=member,
            channel=channel,
            guild=guild,
            application_id=self.application_id,
            data=data,
            payload=payload,
            attachment_size_limit=guild.attachment_size_limit,
            signal=self.signal,
            message=message,
        )
        self.interactions[interaction_id] = interaction
        self._by_token[token] = interaction
        interaction.created_at = time.monotonic()
        interaction.created_at_wall = datetime.now(UTC)
        try:
            await self.gateway.dispatch("INTERACTION_CREATE", payload)
        except (RuntimeError, ConnectionError):
            del self.interactions[interaction_id], self._by_token[token]
            raise
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.first_response_deadline, self._check_answered, interaction))
        return interaction

    def _check_answered(self, interaction: FakeInteraction) -> None:
        if not interaction.callbacks:
            what = interaction.data.get("name") or interaction.data.get("custom_id")
            self.protocol_errors.append(
                f"unanswered: interaction {interaction.id} (type {interaction.type}, {what}) got no response "
                f"within {self.first_response_deadline} s"
            )
            self.signal.notify()
