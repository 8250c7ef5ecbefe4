"""Accepting a request: reserve its cost, queue it, and give the first response within Discord's 3 seconds."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import discord

from cogs.answering import DISCORD_FAILURES, DeferralKind, deferral_for, failure_text, reply_privately
from cogs.imagine import _render
from cogs.members import role_ids
from imaginebot.jobs import DEFAULT_ATTACHMENT_LIMIT, JobRequest, OverQuota, Stopping
from imaginebot.options import ImagineOptions, OptionError, ServerDefaults, check_not_blocked, resolve_options
from imaginebot.store import GuildSettings

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)
# A refusal costs nothing and is told privately (see cogs.answering for the 3-second rule).
refuse = reply_privately
# Said to a request that comes while the bot is stopping (nothing would start it before the next start).
RESTARTING = "I'm restarting right now; please try again in a minute. Nothing was charged."
SOMETHING_BROKE = "Something went wrong on the bot's side; nothing was charged. Please try again."
NOT_TAKEN = "Discord did not take my answer to your request, so it was dropped; nothing was charged. Please try again."


def server_defaults(settings: GuildSettings) -> ServerDefaults:
    """The server's ``/imagine`` defaults and restrictions, as the option rules take them."""
    return ServerDefaults(
        size=settings.default_size,
        quality=settings.default_quality,
        count=settings.default_count,
        output_format=settings.default_format,
        max_count=settings.max_count,
    )


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
    interaction: discord.Interaction[ImagineBot], kind: DeferralKind = "public", *, failure: str = SOMETHING_BROKE
) -> AsyncIterator[None]:
    """Handle an interaction so that Discord has an answer within 3 s, deferred as ``kind`` if need be (see
    cogs.answering), and a failure before the member was answered is told privately as ``failure`` (a button's
    error would otherwise only be logged, and a "thinking..." placeholder left in public).

    A request (``/imagine``, Re-roll, Edit & re-roll) is ``public``; a button that answers by changing its own
    message (Cancel, Delete) is an ``update``.
    """
    deferral = deferral_for(interaction, kind)
    try:
        yield
    except Exception:
        if deferral.settled:
            raise
        log.exception("interaction %s failed before it was answered", interaction.id)
        await refuse(interaction, failure)
    finally:
        deferral.stop()
