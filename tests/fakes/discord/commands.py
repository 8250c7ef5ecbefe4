"""Application commands: what the bot synced, and the `data` of the interactions a member's client would send.

Building `data` enforces what Discord's client enforces before a member can send a command (required options,
lengths, bounds, choices, where the command may be used), raising InvalidCommandInput instead.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .errors import InvalidCommandInput
from .models import ADMINISTRATOR, FakeChannel, FakeMember, FakeRole, new_snowflake

log = logging.getLogger(__name__)

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
CHAT_INPUT = 1
GUILD_CONTEXT = 0
GUILD_INSTALL = 0


class CommandRegistry:
    """The commands the bot synced, globally (key None) and per guild, as Discord stores them."""

    def __init__(self, application_id: int) -> None:
        self.application_id = application_id
        self.commands: dict[int | None, dict[str, dict[str, Any]]] = {}
        self.puts: Counter[int | None] = Counter()

    def bulk_overwrite(self, guild_id: int | None, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace the commands of a scope (PUT); ids survive for unchanged names, like Discord's."""
        old = self.commands.get(guild_id, {})
        stored: dict[str, dict[str, Any]] = {}
        for body in bodies:
            previous = old.get(body["name"])
            command = _stored_command(body, self.application_id, guild_id, previous)
            stored[command["name"]] = command
        self.commands[guild_id] = stored
        self.puts[guild_id] += 1
        return list(stored.values())

    def listing(self, guild_id: int | None) -> list[dict[str, Any]]:
        """The commands of a scope (GET)."""
        return list(self.commands.get(guild_id, {}).values())

    def find(self, guild_id: int, name: str) -> dict[str, Any]:
        """The command a member of `guild_id` sees under `name`: the guild's, else the global one."""
        for scope in (guild_id, None):
            command = self.commands.get(scope, {}).get(name)
            if command is not None and command.get("type", CHAT_INPUT) == CHAT_INPUT:
                return command
        raise InvalidCommandInput(f"no slash command /{name} was synced for guild {guild_id} or globally")

    def total_puts(self) -> int:
        """How many bulk overwrites the bot made, all scopes together."""
        return sum(self.puts.values())


def _stored_command(
    body: dict[str, Any], application_id: int, guild_id: int | None, previous: dict[str, Any] | None
) -> dict[str, Any]:
    command = {
        "type": CHAT_INPUT,
        "description": "",
        "options": [],
        "nsfw": False,
        "name_localizations": None,
        "description_localizations": None,
        **body,
    }
    permissions = command.get("default_member_permissions")
    command["default_member_permissions"] = None if permissions is None else str(permissions)
    if guild_id is None:
        command.setdefault("contexts", None)
        command.setdefault("integration_types", [GUILD_INSTALL])
    else:
        command["guild_id"] = str(guild_id)
    command["application_id"] = str(application_id)
    unchanged = previous is not None and _definition(previous) == _definition(command)
    command["id"] = previous["id"] if previous is not None else str(new_snowflake())
    command["version"] = previous["version"] if unchanged and previous else str(new_snowflake())
    return command


def _definition(command: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in command.items() if k not in ("id", "version", "application_id", "guild_id")}


def check_usable_in_guild(command: dict[str, Any], member: FakeMember) -> None:
    """Refuse a command that Discord's client would not offer to this member in a guild channel."""
    contexts = command.get("contexts")
    if contexts is not None and GUILD_CONTEXT not in contexts:
        raise InvalidCommandInput(f"/{command['name']} is not usable in guilds (contexts {contexts})")
    installs = command.get("integration_types")
    if installs is not None and GUILD_INSTALL not in installs:
        raise InvalidCommandInput(f"/{command['name']} is not installed to guilds (integration_types {installs})")
    required = command.get("default_member_permissions")
    if required is not None:
        needed = int(required)
        if not member.permissions & ADMINISTRATOR and member.permissions & needed != needed:
            raise InvalidCommandInput(
                f"/{command['name']} needs permissions {needed} (default_member_permissions); "
                f"{member.username} has {member.permissions}"
            )


def command_data(
    command: dict[str, Any],
    member: FakeMember,
    *,
    subcommand: str | None,
    options: dict[str, Any],
    focused: str | None = None,
) -> dict[str, Any]:
    """The `data` of an APPLICATION_COMMAND (focused None) or APPLICATION_COMMAND_AUTOCOMPLETE interaction."""
    resolved: dict[str, dict[str, Any]] = {}
    path, leaf_options = _leaf(command, subcommand)
    context = _Context(command["name"], member, resolved)
    built = _options(context, leaf_options, options, focused)
    for kind, name in reversed(path):
        built = [{"type": kind, "name": name, "options": built}]
    data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": CHAT_INPUT}
    if built:
        data["options"] = built
    if resolved:
        data["resolved"] = resolved
    if "guild_id" in command:
        data["guild_id"] = command["guild_id"]
    return data


def _leaf(command: dict[str, Any], subcommand: str | None) -> tuple[list[tuple[int, str]], list[dict[str, Any]]]:
    """Follow "group sub" or "sub" down the command's options; return the path and the leaf's options."""
    declared = command.get("options") or []
    nested = [o for o in declared if o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)]
    if subcommand is None:
        if nested:
            names = ", ".join(o["name"] for o in nested)
            raise InvalidCommandInput(f"/{command['name']} needs a subcommand: one of {names}")
        return [], declared
    path: list[tuple[int, str]] = []
    for name in subcommand.split():
        match = next((o for o in declared if o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) and o["name"] == name), None)
        if match is None:
            raise InvalidCommandInput(f"/{command['name']} has no subcommand {subcommand!r}")
        path.append((match["type"], name))
        declared = match.get("options") or []
    if path[-1][0] != SUB_COMMAND:
        raise InvalidCommandInput(f"/{command['name']} {subcommand} is a group: name one of its subcommands")
    return path, declared


@dataclass
class _Context:
    command_name: str
    member: FakeMember  # the invoker: resolved channels carry their permissions
    resolved: dict[str, dict[str, Any]]


def _options(
    context: _Context, declared: list[dict[str, Any]], given: dict[str, Any], focused: str | None
) -> list[dict[str, Any]]:
    command_name = context.command_name
    by_name = {o["name"]: o for o in declared}
    unknown = set(given) - set(by_name)
    if unknown:
        raise InvalidCommandInput(f"/{command_name} has no option(s) {sorted(unknown)}; it has {sorted(by_name)}")
    built = []
    for option in declared:
        name = option["name"]
        if name == focused:
            if not option.get("autocomplete"):
                raise InvalidCommandInput(f"/{command_name} option {name!r} has no autocomplete")
            # The member is still typing: Discord sends the raw text, unchecked.
            value = given.get(name, "")
            built.append({"type": option["type"], "name": name, "value": str(value), "focused": True})
            continue
        if name not in given:
            if option.get("required") and focused is None:
                raise InvalidCommandInput(f"/{command_name} option {name!r} is required")
            continue
        value = given[name]
        value = _checked(context, option, value) if focused is None else _wire_value(context, option, value)
        built.append({"type": option["type"], "name": name, "value": value})
    return built


def _checked(context: _Context, option: dict[str, Any], value: Any) -> Any:
    """The value as the interaction carries it, after the checks Discord's client makes."""
    kind, name = option["type"], option["name"]
    where = f"/{context.command_name} option {name!r}"
    if kind == STRING:
        if not isinstance(value, str):
            raise InvalidCommandInput(f"{where} takes a string, not {value!r}")
        if len(value) < option.get("min_length", 0):
            raise InvalidCommandInput(f"{where} needs at least {option['min_length']} characters")
        if len(value) > option.get("max_length", 6000):
            raise InvalidCommandInput(f"{where} takes at most {option.get('max_length', 6000)} characters")
    elif kind in (INTEGER, NUMBER):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidCommandInput(f"{where} takes a number, not {value!r}")
        if kind == INTEGER and not float(value).is_integer():
            raise InvalidCommandInput(f"{where} takes an integer, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidCommandInput(f"{where} takes a finite number")
        if "min_value" in option and option["min_value"] is not None and value < option["min_value"]:
            raise InvalidCommandInput(f"{where} must be at least {option['min_value']}, not {value}")
        if "max_value" in option and option["max_value"] is not None and value > option["max_value"]:
            raise InvalidCommandInput(f"{where} must be at most {option['max_value']}, not {value}")
        value = int(value) if kind == INTEGER else value
    elif kind == BOOLEAN:
        if not isinstance(value, bool):
            raise InvalidCommandInput(f"{where} takes true or false, not {value!r}")
    elif kind == ATTACHMENT:
        raise InvalidCommandInput(f"{where}: attachment options are not supported by the fake")
    else:
        value = _wire_value(context, option, value)
        if kind == CHANNEL and option.get("channel_types"):
            channel_type = context.resolved["channels"][value]["type"]
            if channel_type not in option["channel_types"]:
                raise InvalidCommandInput(f"{where} takes channel types {option['channel_types']}, not {channel_type}")
        return value
    choices = option.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise InvalidCommandInput(f"{where} must be one of {[c['value'] for c in choices]}, not {value!r}")
    return value


def _wire_value(context: _Context, option: dict[str, Any], value: Any) -> Any:
    """Plain values as they are; members, roles and channels as their id, with their `resolved` entries."""
    kind, name = option["type"], option["name"]
    resolved = context.resolved
    if kind in (USER, MENTIONABLE) and isinstance(value, FakeMember):
        resolved.setdefault("users", {})[str(value.id)] = value.user_payload()
        if not value.left:  # Discord resolves the member only while they are in the server
            member = value.to_payload(with_user=False, with_permissions=True)
            resolved.setdefault("members", {})[str(value.id)] = member
        return str(value.id)
    if kind in (ROLE, MENTIONABLE) and isinstance(value, FakeRole):
        resolved.setdefault("roles", {})[str(value.id)] = value.to_payload()
        return str(value.id)
    if kind == CHANNEL and isinstance(value, FakeChannel):
        channel = value.to_payload()
        channel["permissions"] = str(context.member.permissions)
        resolved.setdefault("channels", {})[str(value.id)] = channel
        return str(value.id)
    if kind in (USER, ROLE, CHANNEL, MENTIONABLE):
        expected = {USER: "FakeMember", ROLE: "FakeRole", CHANNEL: "FakeChannel", MENTIONABLE: "FakeMember/FakeRole"}
        raise InvalidCommandInput(f"option {name!r} takes a {expected[kind]}, not {value!r}")
    return value
