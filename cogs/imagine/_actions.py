"""What the buttons under a job do: cancel, re-roll, edit & re-roll, delete."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord

from cogs.answering import DISCORD_FAILURES, acknowledge, deferral_for, failure_text, time_to_defer
from cogs.imagine import _render
from cogs.imagine._submit import accept, answered_in_time, options_from_member, refuse
from cogs.imagine._views import EDIT_MODAL_PREFIX, EDIT_MODAL_PROMPT_ID, EditPromptModal
from cogs.members import is_moderator
from imaginebot.jobs import job_options
from imaginebot.options import ImagineOptions
from imaginebot.store import Job

log = logging.getLogger(__name__)
Interaction = discord.Interaction["ImagineBot"]
# Said when the bot's own failure (its database, say) stops a Cancel or a Delete before anything was done.
NOT_CANCELLED = "Something went wrong on the bot's side, so I could not cancel this request. Please try again."
NOT_DELETED = "Something went wrong on the bot's side, so nothing was deleted. Please try again."
# The least time Edit & re-roll gives the job's read before asking to press again (see open_edit_modal).
MODAL_READ_FLOOR = 0.5
# How long Delete waits for a result still being posted (see delete), before deleting what it knows of.
POSTING_WAIT = 60.0
# Re-roll and Edit & re-roll run /imagine again: not for a member Discord would not let run it in this channel.
NO_COMMANDS_HERE = "You can't use commands in this channel, so Re-roll and Edit & re-roll aren't available to you here."
CANCEL_AFTER_RESTART = "I'm restarting right now; this request waits for me. Press Cancel again in a minute."
EDITOR_NOT_OPENED = "Something went wrong on the bot's side, so the editor did not open. Please try again."
BUSY_FOR_MODAL = "I'm busy right now and could not open the editor in time; please press **Edit & re-roll** again."


async def _job_here(interaction: Interaction, job_id: int, *, within: float | None = None) -> Job | None:
    """The job a button points at, if it belongs to this server (read within ``within`` s, or TimeoutError)."""
    async with asyncio.timeout(within):
        job = await interaction.client.store.get_job(job_id)
    if job is None or job.guild_id != interaction.guild_id:
        await refuse(interaction, "That request no longer exists.")
        return None
    return job


async def _saved_options(interaction: Interaction, job: Job) -> ImagineOptions | None:
    """The options the job was made with; None (and the member told why) if they can no longer be read."""
    try:
        return job_options(job)
    except (KeyError, TypeError, ValueError) as error:  # a row written by another version of the bot, say
        log.warning("job %s: its saved options cannot be read: %r", job.id, error)
        await refuse(interaction, "This result's options can no longer be read; please run `/imagine` again.")
        return None


async def _job_to_manage(interaction: Interaction, job_id: int, action: str) -> Job | None:
    """The job, if the clicker may ``action`` it (its requester or a moderator); None, and told why, if not."""
    job = await _job_here(interaction, job_id)
    if job is None:
        return None
    if interaction.user.id != job.user_id and not await is_moderator(interaction):
        await refuse(interaction, f"Only the member who asked for this image, or a moderator, can {action} it.")
        return None
    return job


async def cancel(interaction: Interaction, job_id: int) -> None:
    """The requester or a moderator cancels a job the generator has not taken (queued, or waiting out a 429); it is
    refunded and never delivered."""
    async with answered_in_time(interaction, "update", failure=NOT_CANCELLED):
        job = await _job_to_manage(interaction, job_id, "cancel")
        if job is None:
            return
        with interaction.client.jobs.telling():  # a stop lets the write and its answer both finish
            await _cancel(interaction, job)


async def _cancel(interaction: Interaction, job: Job) -> None:
    """Cancel ``job`` for the clicker (allowed to), and show it on the pressed status."""
    job_id = job.id
    bot = interaction.client
    if not await bot.jobs.cancel(job_id, actor_id=interaction.user.id):
        if await bot.jobs.was_cancelled(job_id):
            await refuse(interaction, "This request was already cancelled (and refunded).")
            return
        if bot.jobs.stopping and job.state == "queued":  # waiting for the next start, in no line of this one
            await refuse(interaction, CANCEL_AFTER_RESTART)
            return
        await refuse(interaction, "This request has already started (or finished), so it can no longer be cancelled.")
        return
    deferral = deferral_for(interaction, "update")
    deferral.settled = True  # cancelled and refunded: a failure from here on is not "could not cancel"
    in_flight = bot.messenger.status_edits_in_flight(job_id)
    bot.messenger.forget(job_id)
    who = "" if interaction.user.id == job.user_id else f" by moderator <@{interaction.user.id}>"
    cancelled = {"content": f"🚫 Cancelled{who}. <@{job.user_id}> was refunded {_render.credits_text(job.cost)}."}
    try:
        if await deferral.deferred():  # the store was slow: the pressed status is edited through the token
            await interaction.edit_original_response(**cancelled, view=None, allowed_mentions=_render.NO_PINGS)
        else:
            await interaction.response.edit_message(**cancelled, view=None, allowed_mentions=_render.NO_PINGS)
    except DISCORD_FAILURES as error:
        # Cancelled and refunded, but the click could not change the status: the job's own token says it, so
        # the status does not keep "queued" and a Cancel button for good.
        log.info("job %s: the Cancel click could not edit the status (%s)", job.id, failure_text(error))
        bot.messenger.restate_after(job, in_flight, {**cancelled, "view": None})
        return
    if in_flight:  # an edit on the job's own token may land after this answer: say it again once they are done
        bot.messenger.restate_after(job, in_flight, {**cancelled, "view": None})


async def rerun(interaction: Interaction, options: ImagineOptions, prompt: str | None = None) -> None:
    """Run saved options again (with another prompt, if given) as a new job charged to this interaction's user.

    The options go through the server's rules as they are now (a lower max count, say), like a new ``/imagine``.
    """
    if not may_run_commands(interaction):
        await refuse(interaction, NO_COMMANDS_HERE)
        return
    checked = await options_from_member(
        interaction,
        prompt=options.prompt if prompt is None else prompt,
        size=str(options.size),
        quality=options.quality,
        count=options.count,
        background=options.background,
        output_format=options.output_format,
        compression=options.compression,
    )
    if checked is not None:
        await accept(interaction, checked)


def may_run_commands(interaction: Interaction) -> bool:
    """Whether the member may use application commands in the interaction's channel (a button is pressed by anyone
    who sees it, while Discord checks "Use Application Commands" before it sends a slash command)."""
    return interaction.permissions.use_application_commands


async def reroll(interaction: Interaction, job_id: int) -> None:
    """The same options again, as a new job charged to whoever clicked."""
    async with answered_in_time(interaction):
        job = await _job_here(interaction, job_id)
        options = None if job is None else await _saved_options(interaction, job)
        if options is not None:
            await rerun(interaction, options)


async def open_edit_modal(interaction: Interaction, job_id: int) -> None:
    """Open a modal with the prompt prefilled.

    A modal can only be the first answer, so this one cannot be deferred: if the job cannot be read by the time a
    deferral would come, the member is asked to press again rather than left with "This interaction failed".
    """
    if not may_run_commands(interaction):
        await refuse(interaction, NO_COMMANDS_HERE)
        return
    try:
        # At least MODAL_READ_FLOOR: a local clock ahead of Discord's must not make every press "too late".
        job = await _job_here(interaction, job_id, within=max(time_to_defer(interaction), MODAL_READ_FLOOR))
    except TimeoutError:
        log.info("interaction %s: the job could not be read in time to open the modal", interaction.id)
        await refuse(interaction, BUSY_FOR_MODAL)
        return
    except Exception:
        log.exception("interaction %s: the job could not be read to open the modal", interaction.id)
        await refuse(interaction, EDITOR_NOT_OPENED)
        return
    options = None if job is None else await _saved_options(interaction, job)
    if options is not None:
        await interaction.response.send_modal(EditPromptModal(job_id, options.prompt))


async def handle_modal(interaction: Interaction) -> bool:
    """Answer an Edit & re-roll modal submission (also one opened before a restart). True if it was ours."""
    data: Any = interaction.data or {}
    custom_id = str(data.get("custom_id", ""))
    if not custom_id.startswith(EDIT_MODAL_PREFIX):
        return False
    job_id_text = custom_id.removeprefix(EDIT_MODAL_PREFIX)
    if not job_id_text.isdigit():
        return False
    async with answered_in_time(interaction):
        job = await _job_here(interaction, int(job_id_text))
        options = None if job is None else await _saved_options(interaction, job)
        if options is not None:
            await rerun(interaction, options, _modal_value(data, EDIT_MODAL_PROMPT_ID) or "")
    return True


def _modal_value(data: dict[str, Any], custom_id: str) -> str | None:
    """Find a text input's value in a modal submission, whether in action rows or label components."""
    stack = list(data.get("components", []))
    while stack:
        component = stack.pop()
        if component.get("custom_id") == custom_id and "value" in component:
            return str(component["value"])
        stack.extend(component.get("components", []))
        if "component" in component:
            stack.append(component["component"])
    return None


async def delete(interaction: Interaction, job_id: int) -> None:
    """The requester or a moderator removes the result: its message, and the others when it was split."""
    async with answered_in_time(interaction, "update", failure=NOT_DELETED):
        job = await _job_to_manage(interaction, job_id, "delete")
        if job is None:
            return
        await acknowledge(interaction, "update")
        deferral_for(interaction, "update").settled = True  # from here a failure is not "nothing was deleted"
        if job.state == "running":
            # Pressed under a result still being posted, or posted and not yet recorded: its other parts are only
            # known (and only all on Discord) once the delivery is done, so wait for it rather than leave them.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POSTING_WAIT):
                    await interaction.client.jobs.until_posted(job.id)
            try:
                job = await interaction.client.store.get_job(job.id) or job
            except Exception:
                log.warning("job %s: could not read where its result went; deleting the pressed message", job.id)
        await _remove_result(interaction, job)


async def _remove_result(interaction: Interaction, job: Job) -> None:
    """Delete the pressed result message (and the rest of a split result), once the click is acknowledged."""
    if interaction.message is None:
        return
    # The pressed message is this interaction's own ("@original" after a deferred update): deleting it through
    # the interaction's webhook needs no permission in the channel, which the bot may not even see.
    removals = [(interaction.message.id, interaction.delete_original_response)]
    if interaction.message.id == job.result_message_id and job.result_channel_id is not None:
        channel = interaction.client.get_partial_messageable(job.result_channel_id, guild_id=job.guild_id)
        removals += [
            (message_id, channel.get_partial_message(message_id).delete) for message_id in job.result_extra_message_ids
        ]
    failed = False
    for message_id, remove in removals:
        try:
            await remove()
        except discord.NotFound:
            pass  # already gone
        except discord.HTTPException as error:
            log.info("job %s: deleting result message %s failed: %s", job.id, message_id, error)
            failed = True
    if failed:
        await interaction.followup.send(
            "I could not delete all of that result: I may lack permission there. A moderator can remove the rest "
            "by hand.",
            ephemeral=True,
            allowed_mentions=_render.NO_PINGS,
        )
