"""Who a member is to the bot: their role ids and whether they moderate the server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

if TYPE_CHECKING:
    from bot import ImagineBot


def role_ids(user: discord.abc.User) -> tuple[int, ...]:
    """The member's role ids as Discord sent them with the interaction, @everyone included (empty outside a server)."""
    if not isinstance(user, discord.Member):
        return ()
    # The interaction carries the member's role ids even when the guild's roles are not cached;
    # Member.roles would silently drop the ones it cannot look up.
    raw = getattr(user, "_roles", None)
    held = [int(role_id) for role_id in raw] if raw is not None else [role.id for role in user.roles]
    # Discord never lists @everyone (its id is the server's), yet every member holds it: without it a limit,
    # exemption or moderator role set on @everyone would silently apply to nobody.
    everyone = user.guild.id
    return (*held, everyone) if everyone not in held else tuple(held)


def role_mention(role_id: int, guild_id: int) -> str:
    """How to name a role in a message: its mention, or @everyone (whose mention ``<@&guild id>`` renders badly)."""
    return "@everyone" if role_id == guild_id else f"<@&{role_id}>"


async def is_moderator(interaction: discord.Interaction[ImagineBot]) -> bool:
    """Manage Server, or the moderator role the server named with ``/settings mod-role``."""
    user = interaction.user
    if interaction.guild_id is None or not isinstance(user, discord.Member):
        return False
    # Manage Server is a server-wide permission: read from the member's roles (and ownership) in the role cache,
    # never from interaction.permissions. That one is the channel's, overwrites included, and a member allowed to
    # edit one channel's permissions (a ticket, a temporary voice channel) can give themselves "Manage Server"
    # there. A server whose roles are not cached yet has no Manage Server holder: only the moderator role counts.
    if user.guild_permissions.manage_guild:
        return True
    settings = await interaction.client.policy.settings(interaction.guild_id)
    return settings.mod_role_id is not None and settings.mod_role_id in role_ids(user)


class NotModerator(app_commands.CheckFailure):
    """A member who is not a moderator ran a moderator command."""


def moderators_only() -> object:
    """An app-command check done by the bot itself (Discord's permission defaults are only a hint)."""

    async def predicate(interaction: discord.Interaction[ImagineBot]) -> bool:
        if await is_moderator(interaction):
            return True
        raise NotModerator(
            "Only this server's moderators (Manage Server, or the moderator role) can do that. Nothing was changed."
        )

    return app_commands.check(predicate)
