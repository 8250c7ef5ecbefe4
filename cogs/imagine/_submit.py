"""Accepting a request: reserve its cost, queue it, and give the first response within Discord's 3 seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import discord

from cogs.imagine import _render
from cogs.imagine._messenger import DISCORD_FAILURES, failure_text
from cogs.members import role_ids
from imaginebot.jobs import DEFAULT_ATTACHMENT_LIMIT, JobRequest, OverQuota, Stopping
from imaginebot.options import ImagineOptions, OptionError, ServerDefaults, check_not_blocked, resolve_options
from imaginebot.store import GuildSettings

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)
# Said to a request that comes while the bot is stopping (nothing would start it before the next start).
RESTARTING = "I'm restarting right now; please try again in a minute. Nothing was charged."
# Discord wants the first response within 3 s of the interaction. If the request is not written by the time the
# interaction is this old (a store slowed by a burst, a lock, a database server far away), the answer is deferred
# (public "thinking...") and the status replaces it once the request is written.
DEFER_AT_AGE = 2.0
SOMETHING_BROKE = "Something went wrong on the bot's side; nothing was charged. Please try again."
NOT_TAKEN = "Discord did not take my answer to your request, so it was dropped; nothing was charged. Please try again."
# What a "thinking..." placeholder that could not be removed is turned into, before a private refusal (the first
# followup after a deferral would otherwise replace it, in public).
ANSWERED_PRIVATELY = "-# Answered privately."
_DEFERRAL_KEY = "imaginebot.deferral"


def server_defaults(settings: GuildSettings) -> ServerDefaults:
    """The server's ``/imagine`` defaults and restrictions, as the option rules take them."""
    return ServerDefaults(
        size=settings.default_size,
        quality=settings.default_quality,
        count=settings.default_count,
        output_format=settings.default_format,
        max_count=settings.max_count,
    )


async def refuse(interaction: discord.Interaction[ImagineBot], message: str) -> None:
    """An ephemeral answer that costs nothing and pings nobody (a public "thinking..." placeholder removed first)."""
    deferral: _Deferral | None = interaction.extras.get(_DEFERRAL_KEY)
    if deferral is not None:
        deferral.settled = True
        await deferral.withdraw()
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=True, allowed_mentions=_render.NO_PINGS)
    else:
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=_render.NO_PINGS)


async def options_from_member(interaction: discord.Interaction[ImagineBot], **given: object) -> ImagineOptions | None:
    """Check what the member typed against the rules and the server's settings; refuse ephemerally if wrong."""
    assert interaction.guild_id is not None
    settings = await interaction.client.policy.settings(interaction.guild_id)
    try:
        return resolve_options(server=server_defaults(settings), **given)  # type: ignore[arg-type]
    except OptionError as error:
        await refuse(interaction, error.message)
        return None


async def accept(interaction: discord.Interaction[ImagineBot], options: ImagineOptions) -> None:
    """Charge the invoker's quota and start the job, answering publicly; or refuse ephemerally.

    Run inside ``answered_in_time``: it defers a slow answer and tells a failure privately."""
    bot = interaction.client
    assert interaction.guild_id is not None and interaction.channel_id is not None
    settings = await bot.policy.settings(interaction.guild_id)
    try:
        check_not_blocked(options.prompt, settings.blocked_words)
    except OptionError as error:
        await refuse(interaction, error.message)
        return
    if bot.jobs.stopping:  # it would be charged and wait for the next start, shown as generating meanwhile
        await refuse(interaction, RESTARTING)
        return
    request = JobRequest(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        user_id=interaction.user.id,
        role_ids=role_ids(interaction.user),
        application_id=interaction.application_id,
        interaction_id=interaction.id,
        interaction_token=interaction.token,
        token_expires_at=interaction.expires_at,
        attachment_size_limit=getattr(interaction, "filesize_limit", None) or DEFAULT_ATTACHMENT_LIMIT,
        options=options,
    )
    deferral = deferral_for(interaction)
    try:
        outcome = await bot.jobs.submit(request)
    except Stopping:  # the stop began while the request was being written
        await refuse(interaction, RESTARTING)
        return
    # Any other failure of the write is answered by answered_in_time, which every caller runs this in.
    deferral.stop()
    if isinstance(outcome, OverQuota):
        await refuse(interaction, _render.over_quota_message(outcome.refused, outcome.cost))
        return
    deferral.settled = True  # from here the member is answered whatever happens (the status, or the result)
    job = outcome.job
    # Queued before the answer: a job with a free slot goes to the generator now, beside the answer, and the
    # answer itself is the job's status ("generating", or "queued" with its position and a Cancel button), so
    # no "thinking" placeholder has to be edited a moment later. From then on it is edited as "@original", by
    # the job's own task, which waits for this answer first (it may finish before Discord confirmed it).
    # No await between submit and first_response: the job's task has not run yet.
    fields = bot.messenger.first_response(job, options, outcome.position)
    try:
        if await deferral.deferred():
            message = await interaction.edit_original_response(**fields)
            response_message_id: int | None = message.id
        else:
            response = await interaction.response.send_message(**fields)
            response_message_id = response.message_id
    except DISCORD_FAILURES as error:
        # A connection that broke or timed out is as good as a refusal: the member may have seen nothing, and the
        # error must not reach the command's error handler, which would say nothing was charged. A "thinking..."
        # placeholder that could not be replaced is removed: the token then has no message, as after a refusal.
        reason = failure_text(error)
        await deferral.withdraw()
        if await bot.jobs.abandon(job, f"Discord refused the first response: {reason}"):
            bot.messenger.forget(job.id)  # refunded and never run: nothing more will be shown
            if await deferral.deferred():  # the interaction was answered (the placeholder): a followup may still go
                with contextlib.suppress(*DISCORD_FAILURES):
                    await interaction.followup.send(NOT_TAKEN, ephemeral=True, allowed_mentions=_render.NO_PINGS)
            return
        # Already at the generator, so already paid for: the result goes to the channel with a mention.
        bot.messenger.token_refused(job)
        log.warning(
            "job %s: Discord refused the first response (%s); it runs on and is posted in the channel", job.id, reason
        )
    else:
        bot.messenger.status_posted(job, response_message_id, queued=outcome.position is not None)
    finally:
        bot.messenger.answered(job.id)


@contextlib.asynccontextmanager
async def answered_in_time(
    interaction: discord.Interaction[ImagineBot], *, update: bool = False, failure: str = SOMETHING_BROKE
) -> AsyncIterator[None]:
    """Handle an interaction so that Discord has an answer within 3 s, deferred if need be (see DEFER_AT_AGE), and
    a failure before the member was answered is told privately as ``failure`` (a button's error would otherwise
    only be logged, and a "thinking..." placeholder left in public).

    A request (``/imagine``, Re-roll, Edit & re-roll) is deferred with a public "thinking..." placeholder; a button
    that answers by changing its own message (Cancel, Delete: ``update``) is deferred as an update, which shows
    nothing, and its answer then edits that message with ``edit_original_response``.
    """
    deferral = deferral_for(interaction, update=update)
    try:
        yield
    except Exception:
        if deferral.settled:
            raise
        log.exception("interaction %s failed before it was answered", interaction.id)
        await refuse(interaction, failure)
    finally:
        deferral.stop()


def time_to_defer(interaction: discord.Interaction[ImagineBot]) -> float:
    """Seconds until the interaction is DEFER_AT_AGE old, by Discord's clock (the id's timestamp); a local clock
    running behind counts from now."""
    age = max(0.0, (discord.utils.utcnow() - interaction.created_at).total_seconds())
    return max(0.0, DEFER_AT_AGE - age)


def deferral_for(interaction: discord.Interaction[ImagineBot], *, update: bool = False) -> _Deferral:
    """The interaction's deferral timer, started at the first call (``update``: see ``answered_in_time``)."""
    deferral: _Deferral | None = interaction.extras.get(_DEFERRAL_KEY)
    if deferral is None:
        deferral = interaction.extras[_DEFERRAL_KEY] = _Deferral(interaction, update=update)
    return deferral


async def acknowledged_update(interaction: discord.Interaction[ImagineBot]) -> None:
    """Make sure a button's interaction is answered as an update of its message (DEFERRED_UPDATE_MESSAGE), by the
    deferral if it already did so; what follows edits the message with ``edit_original_response``."""
    await deferral_for(interaction, update=True).deferred()
    if not interaction.response.is_done():
        await interaction.response.defer()


class _Deferral:
    """Defers the interaction if it is not answered by the time it is DEFER_AT_AGE seconds old."""

    def __init__(self, interaction: discord.Interaction[ImagineBot], *, update: bool = False) -> None:
        self.interaction = interaction
        self.update = update
        self._task: asyncio.Task[bool] | None = None
        # Whether the member has (or is being given) their answer: a later failure is then not told as "nothing
        # was charged".
        self.settled = False
        self._withdrawn = False
        self._timer = asyncio.get_running_loop().call_later(time_to_defer(interaction), self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._defer())

    async def _defer(self) -> bool:
        if self.interaction.response.is_done():
            return False
        log.info("interaction %s: the answer is taking long; deferring it", self.interaction.id)
        try:
            # An update shows nothing; a request shows "thinking..." in public, where its status will be.
            await self.interaction.response.defer(thinking=not self.update)
        except (*DISCORD_FAILURES, discord.InteractionResponded) as error:
            log.warning("interaction %s: could not defer: %s", self.interaction.id, failure_text(error))
            return False
        return True

    def stop(self) -> None:
        """No deferral from now on (one already under way goes on)."""
        self._timer.cancel()

    async def deferred(self) -> bool:
        """Whether the answer was deferred: the answer is then an edit of the "thinking..." placeholder (of the
        button's message, for an update)."""
        self.stop()
        return self._task is not None and await self._task

    async def withdraw(self) -> None:
        """Remove a public "thinking..." placeholder, so that what follows can be said privately (once).

        If it cannot be removed it is edited into a neutral line: the first followup after a deferral replaces the
        placeholder, in public, whatever its ephemeral flag says.
        """
        if not await self.deferred() or self._withdrawn or self.update:  # an update posted nothing to remove
            return
        self._withdrawn = True
        try:
            await self.interaction.delete_original_response()
            return
        except DISCORD_FAILURES as error:
            log.info("interaction %s: could not remove the placeholder: %s", self.interaction.id, failure_text(error))
        with contextlib.suppress(*DISCORD_FAILURES):
            await self.interaction.edit_original_response(content=ANSWERED_PRIVATELY, allowed_mentions=_render.NO_PINGS)
