"""Interaction callbacks and the interaction webhook routes, with Discord's rules about them.

- The first response must come within `first_response_deadline` (404/10062 after), and only once (400/40060);
  it takes effect `callback_delay` seconds after it arrived.
- The webhook (followups, @original) works only after a response (404/10015) and for `token_lifetime` (401/50027).
- After a "thinking" defer the first followup replaces the placeholder and keeps the defer's visibility.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import DiscordHTTPError, field_errors
from .messages import check_files, check_message_body, edit_message, fill_message, new_message
from .models import MESSAGE_FLAG_EPHEMERAL, MESSAGE_FLAG_LOADING, FakeInteraction, FakeMessage
from .multipart import RequestBody
from .rest import API_PREFIX, RestContext, json_response, no_content, record_of, truthy

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger(__name__)

PONG, MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, AUTOCOMPLETE_RESULT, MODAL = 1, 4, 5, 6, 7, 8, 9
APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5

_ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {MESSAGE, DEFERRED_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL},
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {MESSAGE, DEFERRED_MESSAGE},
}
# A modal opened from a button may update that button's message.
_FROM_MESSAGE_MODAL = {MESSAGE, DEFERRED_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE}


class InteractionRoutes:
    """POST /interactions/{id}/{token}/callback and /webhooks/{application_id}/{token}[/messages/...]."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.context = RestContext(fake)

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Register the routes (@original before {message_id}, which would match it too)."""
        p = API_PREFIX
        router.add_post(f"{p}/interactions/{{interaction_id}}/{{interaction_token}}/callback", self.callback)
        hook = f"{p}/webhooks/{{webhook_id}}/{{webhook_token}}"
        router.add_post(hook, self.followup)
        for suffix in ("/messages/@original", "/messages/{message_id}"):
            router.add_get(hook + suffix, self.get_message)
            router.add_patch(hook + suffix, self.edit_message)
            router.add_delete(hook + suffix, self.delete_message)

    # --- the callback ---

    async def callback(self, request: web.Request) -> web.Response:
        """The interaction response."""
        arrived = record_of(request).time
        if self.fake.callback_delay > 0:
            await asyncio.sleep(self.fake.callback_delay)
        interaction = self.fake.interactions.get(int(request.match_info["interaction_id"]))
        if interaction is None or interaction.token != request.match_info["interaction_token"]:
            raise DiscordHTTPError(404, 10062, "Unknown interaction", problem="callback to an unknown interaction")
        body = await self.context.body(request)
        callback = body.json if isinstance(body.json, dict) else {}
        try:
            self._check_first_and_on_time(interaction, callback, arrived)
            check_files(body.files, interaction.attachment_size_limit)
            self.context.validate(request, body.json)
            kind = self._check_type(interaction, callback)
            data = callback.get("data") or {}
            if kind in (MESSAGE, UPDATE_MESSAGE):
                check_message_body(data, body.files, creating=kind == MESSAGE)
        except DiscordHTTPError:
            interaction.rejected_callbacks.append(callback)
            raise
        interaction.callbacks.append(callback)
        interaction.responded_at = arrived
        message = self._apply_callback(interaction, kind, data, body)
        if not truthy(request.query.get("with_response")):
            return no_content()
        return json_response(self._callback_response(interaction, kind, message))

    def _check_first_and_on_time(self, interaction: FakeInteraction, callback: dict[str, Any], arrived: float) -> None:
        if interaction.callbacks:
            raise DiscordHTTPError(
                400,
                40060,
                "Interaction has already been acknowledged.",
                problem=f"second response to interaction {interaction.id} (type {callback.get('type')})",
            )
        delay = arrived - interaction.created_at
        if delay > self.fake.first_response_deadline:
            raise DiscordHTTPError(
                404,
                10062,
                "Unknown interaction",
                problem=f"first response to interaction {interaction.id} came {delay:.2f} s after it was sent; "
                f"the deadline is {self.fake.first_response_deadline} s",
            )

    def _check_type(self, interaction: FakeInteraction, callback: dict[str, Any]) -> int:
        kind = callback.get("type")
        allowed = set(_ALLOWED_CALLBACKS.get(interaction.type, ()))
        if interaction.type == MODAL_SUBMIT and interaction.message is not None:
            allowed |= _FROM_MESSAGE_MODAL
        if not isinstance(kind, int) or kind not in allowed:
            raise DiscordHTTPError(
                400,
                50035,
                "Invalid Form Body",
                problem=f"callback type {kind} is not valid for interaction type {interaction.type}",
                errors=field_errors(("type",), "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid response type"),
            )
        return kind

    def _apply_callback(
        self, interaction: FakeInteraction, kind: int, data: dict[str, Any], body: RequestBody
    ) -> FakeMessage | None:
        fake = self.fake
        if kind == MESSAGE:
            message = self._new_message(interaction, data, body)
            interaction.original = message
            interaction.ephemeral = message.ephemeral
            return message
        if kind == DEFERRED_MESSAGE:
            flags = MESSAGE_FLAG_LOADING | (int(data.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL)
            message = self._new_message(interaction, {}, RequestBody())
            message.flags = flags
            interaction.original = message
            interaction.ephemeral = message.ephemeral
            return message
        if kind in (DEFERRED_UPDATE, UPDATE_MESSAGE):
            message = interaction.message
            if message is not None:
                if kind == UPDATE_MESSAGE:
                    edit_message(message, data, body.files, fake.attachment_url)
                interaction.original = message
                interaction.ephemeral = message.ephemeral
            return message
        if kind == AUTOCOMPLETE_RESULT:
            interaction.autocomplete_choices = list(data.get("choices") or [])
        elif kind == MODAL:
            interaction.modal = data
        return None

    def _new_message(self, interaction: FakeInteraction, data: dict[str, Any], body: RequestBody) -> FakeMessage:
        message = new_message(
            data,
            body.files,
            channel_id=interaction.channel.id,
            guild_id=interaction.guild.id,
            author_id=self.fake.bot_user_id,
            attachment_url=self.fake.attachment_url,
            webhook_token=interaction.token,
            application_id=self.fake.application_id,
            interaction_id=interaction.id,
        )
        self.fake.remember_message(message)
        return message

    def _callback_response(self, interaction: FakeInteraction, kind: int, message: FakeMessage | None) -> Any:
        response: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "activity_instance_id": None,
                "response_message_id": str(message.id) if message is not None else None,
                "response_message_loading": kind == DEFERRED_MESSAGE,
                "response_message_ephemeral": bool(message and message.ephemeral),
            },
            "resource": {"type": kind},
        }
        if message is not None and kind != DEFERRED_UPDATE:
            response["resource"]["message"] = self.fake.message_payload(message)
        return response

    # --- the webhook ---

    def _interaction(self, request: web.Request) -> FakeInteraction:
        token = request.match_info["webhook_token"]
        interaction = self.fake.interaction_by_token(token)
        if interaction is None or int(request.match_info["webhook_id"]) != self.fake.application_id:
            raise DiscordHTTPError(404, 10015, "Unknown Webhook", problem="webhook call with an unknown token")
        age = time.monotonic() - interaction.created_at
        if interaction.token_expired or age > self.fake.token_lifetime:
            raise DiscordHTTPError(
                401,
                50027,
                "Invalid Webhook Token",
                problem=f"token of interaction {interaction.id} used {age:.1f} s after the interaction; "
                f"it lives {self.fake.token_lifetime} s",
            )
        if not interaction.callbacks:
            raise DiscordHTTPError(
                404,
                10015,
                "Unknown Webhook",
                problem=f"webhook call on interaction {interaction.id} before any response to it",
            )
        return interaction

    def _message(self, request: web.Request, interaction: FakeInteraction) -> FakeMessage:
        wanted = request.match_info.get("message_id")
        if wanted is None:
            message = interaction.original
        else:
            candidates = [interaction.original, *interaction.followups]
            message = next((m for m in candidates if m is not None and str(m.id) == wanted), None)
        if message is None or message.deleted:
            which = "@original" if wanted is None else wanted
            raise DiscordHTTPError(
                404, 10008, "Unknown Message", problem=f"message {which} of interaction {interaction.id}"
            )
        return message

    async def followup(self, request: web.Request) -> web.Response:
        """POST /webhooks/{application_id}/{token}: a followup message."""
        body = await self.context.body(request)
        interaction = self._interaction(request)
        check_files(body.files, interaction.attachment_size_limit)
        self.context.validate(request, body.json)
        data = body.json if isinstance(body.json, dict) else {}
        check_message_body(data, body.files, creating=True)
        original = interaction.original
        if original is not None and original.loading and not original.deleted:
            # The first followup after a "thinking" defer becomes the response, with the defer's visibility.
            visibility = original.flags & MESSAGE_FLAG_EPHEMERAL
            fill_message(original, data, body.files, self.fake.attachment_url)
            original.flags = (original.flags & ~(MESSAGE_FLAG_EPHEMERAL | MESSAGE_FLAG_LOADING)) | visibility
            message = original
        else:
            message = self._new_message(interaction, data, body)
            interaction.followups.append(message)
        if truthy(request.query.get("wait")):
            return json_response(self.fake.message_payload(message))
        return no_content()

    async def get_message(self, request: web.Request) -> web.Response:
        """GET @original or a followup."""
        interaction = self._interaction(request)
        return json_response(self.fake.message_payload(self._message(request, interaction)))

    async def edit_message(self, request: web.Request) -> web.Response:
        """PATCH @original or a followup."""
        body = await self.context.body(request)
        interaction = self._interaction(request)
        message = self._message(request, interaction)
        check_files(body.files, interaction.attachment_size_limit)
        self.context.validate(request, body.json)
        data = body.json if isinstance(body.json, dict) else {}
        check_message_body(data, body.files, creating=False)
        edit_message(message, data, body.files, self.fake.attachment_url)
        return json_response(self.fake.message_payload(message))

    async def delete_message(self, request: web.Request) -> web.Response:
        """DELETE @original or a followup."""
        interaction = self._interaction(request)
        message = self._message(request, interaction)
        self.fake.delete_message(message)
        return no_content()
