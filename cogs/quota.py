"""``/quota``: a member's own allowance, and the moderators' tools to set, exempt, budget, reset and report."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.answering import AnsweredInTime, acknowledge, reply_privately
from cogs.members import moderators_only, role_ids, role_mention
from imaginebot.credits import CreditsFormatError, credits_text, format_credits, parse_credits, request_cost
from imaginebot.delivery.batching import file_limit, pack_for_requests
from imaginebot.limits import Limit, ResolvedLimit
from imaginebot.periods import Period, discord_timestamp, period_bounds
from imaginebot.store import Job, LedgerEntry

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)
Interaction = discord.Interaction["ImagineBot"]
PeriodChoice = Literal["day", "week", "month"]
CreditsOption = app_commands.Range[float, 0, 1_000_000_000]


# Jobs whose cost was given back in full.
REFUNDED_STATES = frozenset({"failed", "cancelled", "interrupted"})


def this_period(period: Period) -> str:
    """``today``, ``this week``, ``this month``."""
    return "today" if period == "day" else f"this {period}"


def limit_text(limit: Limit) -> str:
    """``10 credits per day``."""
    return f"{credits_text(limit.credits)} per {limit.period}"


def source_text(resolved: ResolvedLimit, guild_id: int) -> str:
    """Where a member's limit comes from, in words."""
    role = role_mention(resolved.role_id or 0, guild_id)
    if resolved.source == "exempt":
        return f"exempt through the role {role}"
    if resolved.source == "member":
        return "set for this member"
    if resolved.source == "role":
        return f"from the role {role}, the most generous of the member's roles"
    if resolved.source == "server":
        return "this server's default"
    return "the bot's default"


async def say(interaction: Interaction, message: str, **extra: object) -> None:
    """Every quota and settings answer is ephemeral and pings nobody (a followup if it was deferred)."""
    await reply_privately(interaction, message, **extra)


async def limit_from(interaction: Interaction, credits: float, period: Period) -> Limit | None:
    """The moderator's credits per period as a limit; or an ephemeral explanation and None if the number is bad."""
    try:
        return Limit(parse_credits(credits), period)
    except CreditsFormatError as error:
        await say(interaction, error.message)
        return None


@app_commands.guild_only()
@app_commands.allowed_installs(guilds=True, users=False)
@app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
class Quota(AnsweredInTime, commands.GroupCog, group_name="quota"):
    """Image credits: yours, and (for moderators) everyone's."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    async def _standing(self, guild_id: int, member: discord.Member | discord.User) -> str:
        """A member's limit, its source, usage and reset time; a user who left the server has no roles here."""
        resolved = await self.bot.policy.resolve(guild_id, member.id, role_ids(member))
        if resolved.limit is None:
            return f"{member.mention}: **unlimited** ({source_text(resolved, guild_id)})."
        limit = resolved.limit
        used = await self.bot.store.usage(guild_id=guild_id, user_id=member.id, period=limit.period)
        left = max(0, limit.credits - used)
        _, resets = period_bounds(limit.period, datetime.now(UTC))
        source = source_text(resolved, guild_id)
        return (
            f"{member.mention}: **{credits_text(left)} left** of {limit_text(limit)} ({source}).\n"
            f"Used {this_period(limit.period)}: {credits_text(used)}. Resets {discord_timestamp(resets)}."
        )

    @app_commands.command(name="me")
    async def me(self, interaction: Interaction) -> None:
        """Your image credits: limit, used, remaining and when they reset."""
        assert interaction.guild_id is not None and isinstance(interaction.user, discord.Member)
        text = await self._standing(interaction.guild_id, interaction.user)
        await say(interaction, f"{text}\n-# {self._prices()}")

    def _prices(self) -> str:
        """What one 1024x1024 image costs at each quality, from the bot's weights (an operator may change them)."""
        prices = [
            f"{credits_text(request_cost(width=1024, height=1024, quality=q, count=1, weights=self.bot.jobs.weights))}"
            f" at {q}"
            for q in ("low", "medium", "high")
        ]
        return f"One 1024x1024 image costs {', '.join(prices)} quality; larger sizes cost more."

    @app_commands.command(name="set")
    @moderators_only()
    @app_commands.describe(
        member="The member to limit",
        credits="Credits per period (up to two decimals)",
        period="day, week or month (default: day)",
    )
    async def set_member(
        self, interaction: Interaction, member: discord.Member, credits: CreditsOption, period: PeriodChoice = "day"
    ) -> None:
        """Set a member's own limit (moderators)."""
        limit = await limit_from(interaction, credits, period)
        if limit is None:
            return
        assert interaction.guild_id is not None
        await self.bot.store.set_member_limit(interaction.guild_id, member.id, limit, actor_id=interaction.user.id)
        self.bot.policy.forget(interaction.guild_id)
        resolved = await self.bot.policy.resolve(interaction.guild_id, member.id, role_ids(member))
        if resolved.source == "exempt":
            role = role_mention(resolved.role_id or 0, interaction.guild_id)
            await say(
                interaction,
                f"Saved: {member.mention}'s own limit is {limit_text(limit)}, but it has no effect while they hold "
                f"{role}, which is exempt (no member limit).",
            )
            return
        await say(interaction, f"{member.mention} may now use {limit_text(limit)}.")

    @app_commands.command(name="set-role")
    @moderators_only()
    @app_commands.describe(
        role="Members holding this role", credits="Credits per period", period="day, week or month (default: day)"
    )
    async def set_role(
        self, interaction: Interaction, role: discord.Role, credits: CreditsOption, period: PeriodChoice = "day"
    ) -> None:
        """Set the limit for members holding a role (moderators)."""
        limit = await limit_from(interaction, credits, period)
        if limit is None:
            return
        assert interaction.guild_id is not None
        await self.bot.store.set_role_limit(interaction.guild_id, role.id, limit, actor_id=interaction.user.id)
        self.bot.policy.forget(interaction.guild_id)
        settings = await self.bot.policy.settings(interaction.guild_id)
        if role.id in settings.exempt_role_ids:
            await say(
                interaction,
                f"Saved: {role_mention(role.id, interaction.guild_id)}'s limit is {limit_text(limit)}, but it has "
                "no effect while the role is exempt (no member limit; `/quota exempt` with `on: False` ends that).",
            )
            return
        await say(
            interaction,
            f"Members with {role.mention} may use {limit_text(limit)} (the most generous of a member's roles "
            "applies, unless the member has a limit of their own).",
        )

    @app_commands.command(name="set-default")
    @moderators_only()
    @app_commands.describe(credits="Credits per period", period="day, week or month (default: day)")
    async def set_default(self, interaction: Interaction, credits: CreditsOption, period: PeriodChoice = "day") -> None:
        """Set this server's default limit for members with no other limit (moderators)."""
        limit = await limit_from(interaction, credits, period)
        if limit is None:
            return
        assert interaction.guild_id is not None
        await self.bot.store.update_guild_settings(
            interaction.guild_id, actor_id=interaction.user.id, action="default_limit.set", default_limit=limit
        )
        self.bot.policy.forget(interaction.guild_id)
        await say(interaction, f"This server's default is now {limit_text(limit)}.")

    @app_commands.command(name="exempt")
    @moderators_only()
    @app_commands.describe(role="Members holding this role", on="True to exempt, False to end the exemption")
    async def exempt(self, interaction: Interaction, role: discord.Role, on: bool = True) -> None:
        """Give a role unlimited member credits; server and bot budgets still apply (moderators)."""
        assert interaction.guild_id is not None
        await self.bot.store.set_role_exempt(interaction.guild_id, role.id, on, actor_id=interaction.user.id)
        self.bot.policy.forget(interaction.guild_id)
        if on:
            await say(interaction, f"Members with {role.mention} now have no member limit (budgets still apply).")
        else:
            await say(interaction, f"{role.mention} is no longer exempt.")

    @app_commands.command(name="budget")
    @moderators_only()
    @app_commands.describe(
        credits="Credits per period for the whole server", period="day, week or month (default: day)"
    )
    async def budget(self, interaction: Interaction, credits: CreditsOption, period: PeriodChoice = "day") -> None:
        """Cap what the whole server may spend per period (moderators)."""
        limit = await limit_from(interaction, credits, period)
        if limit is None:
            return
        assert interaction.guild_id is not None
        await self.bot.store.update_guild_settings(
            interaction.guild_id, actor_id=interaction.user.id, action="budget.set", budget=limit
        )
        self.bot.policy.forget(interaction.guild_id)
        await say(interaction, f"This server's budget is now {limit_text(limit)}.")

    @app_commands.command(name="budget-clear")
    @moderators_only()
    async def budget_clear(self, interaction: Interaction) -> None:
        """Remove this server's budget (moderators)."""
        assert interaction.guild_id is not None
        await self.bot.store.update_guild_settings(
            interaction.guild_id, actor_id=interaction.user.id, action="budget.clear", budget=None
        )
        self.bot.policy.forget(interaction.guild_id)
        await say(interaction, "This server no longer has a budget (member limits still apply).")

    @app_commands.command(name="clear")
    @moderators_only()
    @app_commands.describe(member="Whose own limit to remove")
    async def clear(self, interaction: Interaction, member: discord.Member | discord.User) -> None:
        """Remove a member's own limit; their roles' or the server's applies again (moderators)."""
        assert interaction.guild_id is not None
        await self.bot.store.set_member_limit(interaction.guild_id, member.id, None, actor_id=interaction.user.id)
        self.bot.policy.forget(interaction.guild_id)
        await say(interaction, "Removed. " + await self._standing(interaction.guild_id, member))

    @app_commands.command(name="reset")
    @moderators_only()
    @app_commands.describe(member="Whose usage this period to give back")
    async def reset(self, interaction: Interaction, member: discord.Member | discord.User) -> None:
        """Give back a member's usage of the current period; budgets keep what was spent (moderators)."""
        assert interaction.guild_id is not None
        resolved = await self.bot.policy.resolve(interaction.guild_id, member.id, role_ids(member))
        period: Period = resolved.limit.period if resolved.limit else "day"
        given = await self.bot.store.reset_member_usage(
            interaction.guild_id, member.id, period, actor_id=interaction.user.id
        )
        await say(
            interaction, f"Gave back {credits_text(given)}. " + await self._standing(interaction.guild_id, member)
        )

    @app_commands.command(name="view")
    @moderators_only()
    @app_commands.describe(member="Whose quota to show")
    async def view(self, interaction: Interaction, member: discord.Member | discord.User) -> None:
        """A member's limit, where it comes from, usage, reset time and recent requests (moderators)."""
        assert interaction.guild_id is not None
        text = await self._standing(interaction.guild_id, member)
        jobs = await self.bot.store.recent_jobs(guild_id=interaction.guild_id, user_id=member.id, limit=5)
        if jobs:
            refunds = await self.bot.store.job_refunds(guild_id=interaction.guild_id, job_ids=[job.id for job in jobs])
            text += "\nRecent requests:\n" + "\n".join(recent_line(job, refunds.get(job.id, 0)) for job in jobs)
        await say(interaction, text)

    @app_commands.command(name="report")
    @moderators_only()
    @app_commands.describe(period="The current day, week or month")
    async def report(self, interaction: Interaction, period: PeriodChoice = "day") -> None:
        """Top members and totals for the current period, with the period's ledger as CSV (moderators)."""
        assert interaction.guild_id is not None
        # A month of a busy server is a large query and file: answer within Discord's 3 s first.
        await acknowledge(interaction, "private")
        start, end = period_bounds(period, datetime.now(UTC))
        store = self.bot.store
        rows = await store.ledger(guild_id=interaction.guild_id, since=start, until=end)
        top = await store.usage_by_member(guild_id=interaction.guild_id, since=start, until=end)
        spent = sum(entry.amount for entry in rows if entry.reason != "reset")
        heading = this_period(period).capitalize()
        lines = [f"**{heading}** (since {discord_timestamp(start, 'f')}): {credits_text(spent)} spent."]
        for rank, (user_id, used) in enumerate(top[:10], start=1):
            lines.append(f"{rank}. <@{user_id}>: {credits_text(used)}")
        if not rows:
            lines.append("Nobody has generated anything yet.")
        elif not top and spent == 0:
            lines.append("Every request was refunded: nothing was charged.")
        elif not top:
            lines.append("Every member's usage was given back by a moderator (the server's spending stands).")
        name = f"quota-{period}-{start:%Y-%m-%d}"
        parts = await asyncio.to_thread(ledger_files, rows, name, file_limit(interaction.filesize_limit))
        if rows and not parts:
            lines.append(f"The ledger ({len(rows)} entries) is too large to attach here.")
        elif len(parts) > 1:
            lines.append(f"The ledger is in {len(parts)} CSV files, each within this server's upload limit.")
        messages = pack_for_requests(parts, lambda part: len(part[0]))
        for number, batch in enumerate(messages):
            files = [discord.File(io.BytesIO(data), filename=file_name) for data, file_name in batch]
            if number == 0:
                await say(interaction, "\n".join(lines), files=files)
            else:
                await say(interaction, f"The ledger, continued ({number + 1} of {len(messages)}).", files=files)
        if not messages:
            await say(interaction, "\n".join(lines))


# More files than this would flood the channel: a ledger that large is too large to attach.
MAX_LEDGER_FILES = 50
LEDGER_HEADER = ("time", "member_id", "job_id", "credits", "reason", "charged_at", "actor_id")


def ledger_files(rows: Sequence[LedgerEntry], name: str, size_limit: int) -> list[tuple[bytes, str]]:
    """The ledger as CSV files named after ``name``, each with the header row and within ``size_limit`` bytes:
    one ``name.csv`` when it fits, else ``name-part-1-of-N.csv`` ..., none if that takes more than
    ``MAX_LEDGER_FILES`` (or a single row does not fit). Always one file for an empty ledger (the header alone).

    Runs in a thread: a month of a busy server is hundreds of thousands of rows.
    """
    header = _csv_line(LEDGER_HEADER)
    parts: list[list[bytes]] = [[header]]
    size = len(header)
    for entry in rows:
        line = _csv_line(
            (
                entry.created_at.isoformat(),
                entry.user_id,
                entry.job_id or "",
                format_credits(entry.amount),
                entry.reason,
                entry.charged_at.isoformat(),
                entry.actor_id or "",
            )
        )
        if len(header) + len(line) > size_limit:
            return []
        if size + len(line) > size_limit:
            if len(parts) == MAX_LEDGER_FILES:
                return []
            parts.append([header])
            size = len(header)
        parts[-1].append(line)
        size += len(line)
    if len(parts) == 1:
        return [(b"".join(parts[0]), f"{name}.csv")]
    return [(b"".join(part), f"{name}-part-{n}-of-{len(parts)}.csv") for n, part in enumerate(parts, start=1)]


def _csv_line(values: Sequence[object]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue().encode()


def recent_line(job: Job, refunded: int) -> str:
    """One of ``/quota view``'s recent requests: when, its state and what it cost the member in the end."""
    head = f"`#{job.id}` {discord_timestamp(job.created_at)} · {job.state} · "
    if job.state in REFUNDED_STATES:
        return head + f"{credits_text(job.cost)} (refunded)"
    if refunded:  # delivered with images missing: their share was given back
        kept, given = credits_text(job.cost - refunded), credits_text(refunded)
        return head + f"{kept} ({given} of {credits_text(job.cost)} refunded)"
    return head + credits_text(job.cost)


async def setup(bot: ImagineBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Quota(bot))
