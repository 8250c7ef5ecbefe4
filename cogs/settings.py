"""``/settings``: a server's own defaults for ``/imagine``, its moderator role, blocked words and log channel."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.answering import AnsweredInTime
from cogs.members import moderators_only, role_mention
from cogs.quota import limit_text, say
from imaginebot.blocked_words import WordListError, normalize_entry, parse_word_list
from imaginebot.limits import Limit
from imaginebot.options import MAX_COUNT
from imaginebot.sizes import SizeError, check_size, valid_size_or_none
from imaginebot.store import GuildSettings

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)
Interaction = discord.Interaction["ImagineBot"]
MAX_BLOCKED_ENTRIES = 500
# How much of the blocked list /settings show writes in its message; a longer list comes as a file.
BLOCKED_SHOWN_INLINE = 900
MESSAGE_LIMIT = 2000
BLOCKED_IN_FILE = "-# Blocked: all {count} in the attached file, one per line"
ROLES_IN_FILE = "too many to list here, all in the attached role-limits.txt"


@app_commands.guild_only()
@app_commands.allowed_installs(guilds=True, users=False)
@app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
class Settings(AnsweredInTime, commands.GroupCog, group_name="settings"):
    """This server's settings for the image bot (moderators)."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self._list_locks: dict[int, asyncio.Lock] = {}
        super().__init__()

    def _editing_list(self, guild_id: int) -> asyncio.Lock:
        """Held while a server's blocked list is read, changed and written: two moderators blocking words at
        once must not each write back the list without the other's words (one bot process per database)."""
        return self._list_locks.setdefault(guild_id, asyncio.Lock())

    async def _update(self, interaction: Interaction, action: str, **changes: object) -> GuildSettings:
        """Save the changes (audited) and return the server's settings as they are now."""
        assert interaction.guild_id is not None
        settings = await self.bot.store.update_guild_settings(
            interaction.guild_id, actor_id=interaction.user.id, action=action, **changes
        )
        self.bot.policy.forget(interaction.guild_id)
        return settings

    @app_commands.command(name="show")
    @moderators_only()
    async def show(self, interaction: Interaction) -> None:
        """Show this server's settings."""
        assert interaction.guild_id is not None
        guild_id = interaction.guild_id
        s = await self.bot.policy.settings(guild_id)
        mod_role = role_mention(s.mod_role_id, guild_id) if s.mod_role_id else "none (Manage Server only)"
        max_count = s.max_count or MAX_COUNT
        count = f"count {s.default_count or 1}"
        if (capped := _capped_count(s)) is not None:
            count += f" (capped at {capped} by the most per request)"
        lines = [
            "**/imagine defaults**: "
            f"size {_default_size_text(s.default_size)}, quality {s.default_quality or 'medium'}, "
            f"{count}, format {s.default_format or 'png'}",
            f"**Most images per request**: {max_count}",
            f"**Moderator role**: {mod_role}",
            f"**Log channel**: {f'<#{s.log_channel_id}>' if s.log_channel_id else 'off'}",
            f"**Blocked words**: {len(s.blocked_words)} (listed only here, for moderators)",
            f"**Default member limit**: {limit_text(s.default_limit or self.bot.policy.bot_default)}"
            + ("" if s.default_limit else " (the bot's default)"),
            f"**Server budget**: {limit_text(s.budget) if s.budget else 'none'}",
        ]
        if self.bot.policy.global_budget is not None:
            lines.append(f"**Bot-wide budget** (set by the operator): {limit_text(self.bot.policy.global_budget)}")
        files: list[discord.File] = []
        role_lines = []
        if s.role_limits:
            limits = [f"{role_mention(role, guild_id)} {limit_text(limit)}" for role, limit in s.role_limits.items()]
            role_lines.append(f"**Role limits**: {', '.join(limits)}")
        if s.exempt_role_ids:
            exempt = ", ".join(role_mention(role_id, guild_id) for role_id in sorted(s.exempt_role_ids))
            role_lines.append(f"**Exempt roles**: {exempt}")
        if len("\n".join([*lines, *role_lines])) <= MESSAGE_LIMIT - len(BLOCKED_IN_FILE) - 8:
            lines += role_lines
        elif role_lines:  # too many to list here: all of them in a file, by name
            lines.append(f"**Role limits and exempt roles**: {ROLES_IN_FILE}")
            files.append(_role_file(interaction.guild, s.role_limits, s.exempt_role_ids))
        lines = _within(lines, MESSAGE_LIMIT - len(BLOCKED_IN_FILE) - 8)
        if s.blocked_words:
            words = ", ".join(_code(word) for word in s.blocked_words)
            room = MESSAGE_LIMIT - len("\n".join(lines)) - len("\n-# Blocked: ")
            if len(words) <= min(BLOCKED_SHOWN_INLINE, room):
                lines.append(f"-# Blocked: {words}")
            else:  # the whole list, where a moderator can read it and find what to unblock
                lines.append(BLOCKED_IN_FILE.format(count=len(s.blocked_words)))
                text = "\n".join(s.blocked_words) + "\n"
                files.append(discord.File(io.BytesIO(text.encode()), filename="blocked-words.txt"))
        await say(interaction, "\n".join(lines), **({"files": files} if files else {}))

    @app_commands.command(name="defaults")
    @moderators_only()
    @app_commands.describe(
        size="Default size, e.g. 1536x1024",
        quality="Default quality",
        count="Default number of images",
        format="Default file format",
    )
    async def defaults(
        self,
        interaction: Interaction,
        size: app_commands.Range[str, 1, 40] | None = None,
        quality: Literal["low", "medium", "high"] | None = None,
        count: app_commands.Range[int, 1, 10] | None = None,
        format: Literal["png", "jpeg", "webp"] | None = None,  # the contract names the option "format"
    ) -> None:
        """Set this server's defaults for /imagine (each optional)."""
        changes: dict[str, object] = {}
        if size is not None:
            try:
                changes["default_size"] = str(check_size(size))
            except SizeError as error:
                await say(interaction, error.message)
                return
        if quality is not None:
            changes["default_quality"] = quality
        if count is not None:
            changes["default_count"] = count
        if format is not None:
            changes["default_format"] = format
        if not changes:
            await say(interaction, "Give at least one of size, quality, count or format.")
            return
        settings = await self._update(interaction, "settings.defaults", **changes)
        summary = ", ".join(f"{key.removeprefix('default_')} {value}" for key, value in changes.items())
        await say(interaction, f"New /imagine defaults: {summary}.{_capped_count_note(settings)}")

    @app_commands.command(name="max-count")
    @moderators_only()
    @app_commands.describe(count="The most images one request may ask for")
    async def max_count(self, interaction: Interaction, count: app_commands.Range[int, 1, 10]) -> None:
        """Limit how many images one request may ask for."""
        settings = await self._update(interaction, "settings.max_count", max_count=count)
        images = f"{count} image{'s' if count != 1 else ''}"
        await say(interaction, f"Requests may now ask for at most {images}.{_capped_count_note(settings)}")

    @app_commands.command(name="mod-role")
    @moderators_only()
    @app_commands.describe(role="Members with this role may use moderator commands; leave empty for none")
    async def mod_role(self, interaction: Interaction, role: discord.Role | None = None) -> None:
        """Name the role whose members count as moderators (or none)."""
        await self._update(interaction, "settings.mod_role", mod_role_id=role.id if role else None)
        if role is None:
            await say(interaction, "No moderator role: only members with Manage Server are moderators.")
        else:
            await say(interaction, f"Members with {role.mention} are now moderators for this bot.")

    @app_commands.command(name="block")
    @moderators_only()
    @app_commands.describe(words="Comma-separated words or phrases; matched as whole words, any letter case")
    async def block(self, interaction: Interaction, words: app_commands.Range[str, 1, 1000]) -> None:
        """Refuse prompts containing these words or phrases."""
        assert interaction.guild_id is not None
        try:
            new = parse_word_list(words)
        except WordListError as error:
            await say(interaction, error.message)
            return
        if not new:
            await say(interaction, "Give one or more words or phrases, separated by commas.")
            return
        async with self._editing_list(interaction.guild_id):
            current = (await self.bot.policy.settings(interaction.guild_id)).blocked_words
            # Compared in today's form: an entry saved by an earlier version may be written differently.
            known = {normalize_entry(word) for word in current}
            merged = (*current, *(word for word in new if word not in known))
            if len(merged) > MAX_BLOCKED_ENTRIES:
                await say(interaction, f"A server may block at most {MAX_BLOCKED_ENTRIES} words or phrases.")
                return
            await self._update(interaction, "settings.block", blocked_words=merged)
        added = len(merged) - len(current)
        if added == 0:
            await say(interaction, f"All of those were already blocked; {len(merged)} in all.")
            return
        entries = "word or phrase" if added == 1 else "words or phrases"
        await say(interaction, f"Blocked {added} new {entries}; {len(merged)} in all.")

    @app_commands.command(name="unblock")
    @moderators_only()
    @app_commands.describe(words="Comma-separated words or phrases to allow again")
    async def unblock(self, interaction: Interaction, words: app_commands.Range[str, 1, 1000]) -> None:
        """Allow these words or phrases again."""
        assert interaction.guild_id is not None
        try:
            remove = set(parse_word_list(words))
        except WordListError as error:
            await say(interaction, error.message)
            return
        async with self._editing_list(interaction.guild_id):
            current = (await self.bot.policy.settings(interaction.guild_id)).blocked_words
            kept = tuple(word for word in current if normalize_entry(word) not in remove)
            await self._update(interaction, "settings.unblock", blocked_words=kept)
        removed = len(current) - len(kept)
        if removed == 0:
            await say(interaction, f"None of those were blocked; {len(kept)} still are (`/settings show` lists them).")
            return
        await say(interaction, f"Unblocked {removed}; {len(kept)} still blocked.")

    @app_commands.command(name="log-channel")
    @moderators_only()
    @app_commands.describe(channel="Where every delivered generation is also logged; leave empty to turn off")
    async def log_channel(self, interaction: Interaction, channel: discord.TextChannel | None = None) -> None:
        """Log every delivered generation (requester, prompt, link) in a channel, or turn the log off."""
        await self._update(interaction, "settings.log_channel", log_channel_id=channel.id if channel else None)
        if channel is None:
            await say(interaction, "Log channel off.")
            return
        text = f"Generations are now logged in {channel.mention}."
        me = channel.guild.me
        if me is not None and not channel.permissions_for(me).send_messages:
            # Saved anyway: a moderator may fix the channel's permissions next.
            text += " I cannot post there yet: give me View Channel and Send Messages in it."
        await say(interaction, text)


def _code(text: str) -> str:
    """``text`` as inline code, backticks in it included: fenced by one more backtick than its longest run of them,
    spaced from its edges."""
    if "`" not in text:
        return f"`{text}`"
    fence = "`" * (max(len(run) for run in re.findall("`+", text)) + 1)
    return f"{fence} {text} {fence}"


def _default_size_text(size: str | None) -> str:
    """The server's default size for /settings show, saying so when one saved under older rules no longer holds."""
    if not size:
        return "1024x1024"
    if valid_size_or_none(size) is None:
        return f"{size} (no longer a valid size: requests use 1024x1024; set another with /settings defaults)"
    return size


def _capped_count(settings: GuildSettings) -> int | None:
    """The most images per request when the server's default count is above it (requests get that), else None."""
    most = settings.max_count or MAX_COUNT
    return most if (settings.default_count or 1) > most else None


def _capped_count_note(settings: GuildSettings) -> str:
    """A note for the defaults and max-count replies when the default count is capped."""
    if (capped := _capped_count(settings)) is None:
        return ""
    return f" Requests without a count get {capped}: the default count is above the most per request."


def _role_file(
    guild: discord.Guild | None, role_limits: Mapping[int, Limit], exempt_role_ids: Collection[int]
) -> discord.File:
    """The server's role limits and exempt roles as a text file, a role per line by its name (and id)."""

    def name(role_id: int) -> str:
        role = guild.get_role(role_id) if guild is not None else None
        if role is None:
            return f"role {role_id}"
        return f"{'' if role.name.startswith('@') else '@'}{role.name} ({role_id})"  # @everyone has its @ already

    lines = []
    if role_limits:
        lines.append("Role limits (the most generous of a member's roles applies):")
        lines += [f"  {name(role_id)}: {limit_text(limit)}" for role_id, limit in role_limits.items()]
    if exempt_role_ids:
        lines.append("Exempt roles (no member limit):")
        lines += [f"  {name(role_id)}" for role_id in sorted(exempt_role_ids)]
    return discord.File(io.BytesIO(("\n".join(lines) + "\n").encode()), filename="role-limits.txt")


def _within(lines: list[str], limit: int) -> list[str]:
    """The lines that fit ``limit`` characters together, whole lines only, with a note when some were left out."""
    note = "-# (cut short: more than one message holds)"
    if len("\n".join(lines)) <= limit:
        return lines
    kept: list[str] = []
    for line in lines:
        if len("\n".join([*kept, line, note])) <= limit:  # a line too long is left out; the ones after it may fit
            kept.append(line)
    return [*kept, note]


async def setup(bot: ImagineBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Settings(bot))
