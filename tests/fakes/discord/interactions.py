"""What a member's Discord client sends: the INTERACTION_CREATE payload, button lookups, modal answers."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterator
from typing import Any

from .errors import InvalidCommandInput
from .models import FakeChannel, FakeGuild, FakeMember

log = logging.getLogger(__name__)

TEXT_INPUT = 4
GUILD_CONTEXT = 0
GUILD_INSTALL_KEY = "0"  # authorizing_integration_owners is keyed by integration type


def new_interaction_token(interaction_id: int) -> str:
    """A token shaped like Discord's (base64 of "interaction:<id>:<secret>")."""
    secret = secrets.token_urlsafe(48)
    return base64.urlsafe_b64encode(f"interaction:{interaction_id}:{secret}".encode()).decode().rstrip("=")


def interaction_payload(
    interaction_id: int,
    token: str,
    kind: int,
    data: dict[str, Any],
    *,
    member: FakeMember,
    channel: FakeChannel,
    guild: FakeGuild,
    application_id: int,
) -> dict[str, Any]:
    """The interaction object of INTERACTION_CREATE, for a member in a guild text channel."""
    return {
        "id": str(interaction_id),
        "application_id": str(application_id),
        "type": kind,
        "data": data,
        "guild_id": str(guild.id),
        "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
        "channel_id": str(channel.id),
        "channel": {**channel.to_payload(), "permissions": str(member.permissions)},
        "member": member.to_payload(with_permissions=True),
        "token": token,
        "version": 1,
        "app_permissions": str(guild.bot_permissions(channel)),
        "locale": "en-US",
        "guild_locale": guild.locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "authorizing_integration_owners": {GUILD_INSTALL_KEY: str(guild.id)},
        "context": GUILD_CONTEXT,
        "attachment_size_limit": guild.attachment_size_limit,
    }


def find_component(components: list[dict[str, Any]], custom_id: str) -> dict[str, Any] | None:
    """The component with that custom_id, at any depth (rows, sections, containers, labels)."""
    for component in walk_components(components):
        if component.get("custom_id") == custom_id:
            return component
    return None


def walk_components(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every component and the components inside it."""
    for component in components:
        yield component
        yield from walk_components(component.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(component.get(key), dict):
                yield from walk_components([component[key]])


def modal_answers(modal: dict[str, Any], values: dict[str, str]) -> list[dict[str, Any]]:
    """The submitted components, shaped like the modal: rows of text inputs, or label components."""
    inputs = {c["custom_id"]: c for c in walk_components(modal.get("components") or []) if c.get("type") == TEXT_INPUT}
    unknown = set(values) - set(inputs)
    if unknown:
        raise InvalidCommandInput(f"the modal has no text input(s) {sorted(unknown)}; it has {sorted(inputs)}")

    def answer(text_input: dict[str, Any]) -> dict[str, Any]:
        custom_id = text_input["custom_id"]
        value = values.get(custom_id, text_input.get("value") or "")
        if text_input.get("required", True) and not value:
            raise InvalidCommandInput(f"the modal's text input {custom_id!r} is required")
        if value and len(value) < (text_input.get("min_length") or 0):
            raise InvalidCommandInput(f"{custom_id!r} needs at least {text_input['min_length']} characters")
        if len(value) > (text_input.get("max_length") or 4000):
            raise InvalidCommandInput(f"{custom_id!r} takes at most {text_input.get('max_length') or 4000} characters")
        return {"type": TEXT_INPUT, "id": text_input.get("id") or 0, "custom_id": custom_id, "value": value}

    answers = []
    for component in modal.get("components") or []:
        if component.get("type") == 1:
            row = [answer(c) for c in component.get("components") or [] if c.get("type") == TEXT_INPUT]
            answers.append({"type": 1, "id": component.get("id") or 0, "components": row})
        elif component.get("type") == 18 and (component.get("component") or {}).get("type") == TEXT_INPUT:
            answers.append({"type": 18, "id": component.get("id") or 0, "component": answer(component["component"])})
    return answers
