"""The Discord side of a job's life: its public status message, the delivered images, and every fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import discord

from cogs.imagine import _render
from cogs.imagine._views import CancelButton, result_view
from imaginebot.delivery import DeliverableImage, alt_text
from imaginebot.jobs import Delivery, DeliveryFailed, DeliveryReceipt, job_options
from imaginebot.store import Job

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)

# Queue-position edits are sent at most this often per job, so a burst cannot trip Discord's rate limits.
STATUS_EDIT_INTERVAL = 5.0
# Treat a token as dead a little before Discord does, so a long upload does not start on a dying token.
TOKEN_MARGIN = timedelta(seconds=30)
# Discord codes meaning the interaction token can no longer be used.
DEAD_TOKEN_CODES = {10015, 50027, 10062}


def _requester_only(user_id: int) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)], replied_user=False)


class JobMessenger:
    """Implements ``imaginebot.jobs.JobEvents`` with the interaction's webhook, the channel and DMs."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self._last_edit: dict[int, float] = {}
        self._pending: dict[int, asyncio.TimerHandle] = {}

    # -- helpers ------------------------------------------------------------------------------------------------

    def webhook(self, job: Job) -> discord.Webhook:
        """The interaction's webhook: the original response and followups of the job's interaction."""
        return discord.Webhook.partial(job.application_id, job.interaction_token, client=self.bot)

    @staticmethod
    def token_alive(job: Job) -> bool:
        """Whether the interaction token should still work."""
        return datetime.now(UTC) < job.token_expires_at - TOKEN_MARGIN

    async def edit_status(self, job: Job, **fields: Any) -> None:
        """Edit the job's status message (the interaction's original response)."""
        self._cancel_pending(job.id)
        self._last_edit[job.id] = time.monotonic()
        message_id: Any = job.status_message_id or "@original"
        await self.webhook(job).edit_message(message_id, allowed_mentions=_render.NO_PINGS, **fields)

    def _cancel_pending(self, job_id: int) -> None:
        handle = self._pending.pop(job_id, None)
        if handle is not None:
            handle.cancel()

    def _throttled(self, job: Job, **fields: Any) -> None:
        """Edit the status now, or once STATUS_EDIT_INTERVAL has passed since the last edit (latest wins)."""
        wait = self._last_edit.get(job.id, 0.0) + STATUS_EDIT_INTERVAL - time.monotonic()
        self._cancel_pending(job.id)
        if wait <= 0:
            self._spawn(self.edit_status(job, **fields), job)
            return
        loop = asyncio.get_running_loop()
        self._pending[job.id] = loop.call_later(wait, lambda: self._spawn(self.edit_status(job, **fields), job))

    def _spawn(self, call: Any, job: Job) -> None:
        async def guarded() -> None:
            try:
                await call
            except discord.HTTPException as error:
                log.info("job %s: status edit refused by Discord: %s", job.id, error)

        self.bot.loop.create_task(guarded())

    def forget(self, job_id: int) -> None:
        """Drop the throttling state of a finished job."""
        self._cancel_pending(job_id)
        self._last_edit.pop(job_id, None)

    async def tell(self, job: Job, content: str) -> None:
        """Say something to the requester about a job, on whichever channel still works."""
        if self.token_alive(job):
            try:
                await self.edit_status(job, content=content, view=None, embed=None)
                return
            except discord.HTTPException as error:
                log.info("job %s: token edit failed (%s); trying the channel", job.id, error)
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            await channel.send(content, allowed_mentions=_requester_only(job.user_id))
            return
        except discord.HTTPException as error:
            log.info("job %s: channel message failed (%s); trying a DM", job.id, error)
        await self.direct_message(job, content)

    async def direct_message(self, job: Job, content: str) -> bool:
        """DM the requester where Discord allows it."""
        try:
            user = self.bot.get_user(job.user_id) or await self.bot.fetch_user(job.user_id)
            await user.send(content, allowed_mentions=_render.NO_PINGS)
            return True
        except discord.HTTPException as error:
            log.info("job %s: could not DM the requester either: %s", job.id, error)
            return False

    # -- JobEvents ----------------------------------------------------------------------------------------------

    async def on_queued(self, job: Job, position: int) -> None:
        """Show the job's place in the queue, with a Cancel button."""
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton(job.id))
        self._throttled(job, content=_render.queued_status(job, job_options(job), position), view=view)

    async def on_started(self, job: Job) -> None:
        """The job went to the generator: swap the status, drop the Cancel button."""
        content = _render.generating_status(job, job_options(job), datetime.now(UTC))
        await self.edit_status(job, content=content, view=None)

    async def on_rate_limited(self, job: Job, seconds: float) -> None:
        """The generator said 429: the job waits and is sent again."""
        until = datetime.now(UTC) + timedelta(seconds=seconds)
        self._throttled(job, content=_render.rate_limited_status(job, job_options(job), seconds, until))

    async def on_failed(self, job: Job, sentence: str) -> None:
        """One plain sentence about what went wrong; the job was refunded."""
        self.forget(job.id)
        await self.tell(job, _render.failure_message(job, sentence))

    async def on_interrupted(self, job: Job) -> None:
        """A restart cut the job short: tell the member on the same token (a followup) while it is valid."""
        self.forget(job.id)
        content = _render.interrupted_message(job)
        if self.token_alive(job):
            try:
                await self.webhook(job).send(content, allowed_mentions=_render.NO_PINGS)
                with contextlib.suppress(discord.HTTPException):
                    await self.edit_status(job, content="⚠️ Interrupted by a restart (refunded).", view=None)
                return
            except discord.HTTPException as error:
                log.info("job %s: followup about the restart failed: %s", job.id, error)
        await self.tell(job, content)

    async def deliver(self, job: Job, delivery: Delivery) -> DeliveryReceipt:
        """Post the images: on the interaction while its token lives, else in the channel, else explain by DM."""
        self.forget(job.id)
        receipt = await self._deliver_anywhere(job, delivery)
        await self._log_delivery(job, delivery, receipt)
        return receipt

    async def _log_delivery(self, job: Job, delivery: Delivery, receipt: DeliveryReceipt) -> None:
        """Post the generation in the server's log channel, if it has one, pinging nobody."""
        settings = await self.bot.policy.settings(job.guild_id)
        if settings.log_channel_id is None:
            return
        link = ""
        if receipt.message_id is not None:
            link = f"https://discord.com/channels/{job.guild_id}/{receipt.channel_id}/{receipt.message_id}"
        content = _render.log_entry(job, delivery.options, link)
        try:
            channel = self.bot.get_partial_messageable(settings.log_channel_id, guild_id=job.guild_id)
            await channel.send(content, allowed_mentions=_render.NO_PINGS)
        except discord.HTTPException as error:
            log.warning("job %s: could not post in the log channel %s: %s", job.id, settings.log_channel_id, error)

    async def _deliver_anywhere(self, job: Job, delivery: Delivery) -> DeliveryReceipt:
        if self.token_alive(job):
            try:
                return await self._deliver_on_token(job, delivery)
            except discord.HTTPException as error:
                if not _token_dead(error):
                    raise
                log.info("job %s: interaction token no longer works (%s); posting in the channel", job.id, error)
        try:
            return await self._deliver_in_channel(job, delivery)
        except (discord.Forbidden, discord.NotFound) as error:
            log.warning("job %s: cannot post in channel %s: %s", job.id, job.channel_id, error)
        await self.direct_message(
            job,
            f"Your /imagine request ({_render.describe(delivery.options)}) finished after Discord's 15-minute "
            "window for answering it, and I may not post in that channel, so the images could not be delivered. "
            f"You were not charged ({_render.credits_text(job.cost)} refunded).",
        )
        raise DeliveryFailed("interaction token expired and the channel refused the bot")

    async def _deliver_on_token(self, job: Job, delivery: Delivery) -> DeliveryReceipt:
        webhook = self.webhook(job)
        first_id: int | None = None
        messages = _messages_for(job, delivery)
        for number, (content, embed, images) in enumerate(messages):
            files = _files(delivery, images)
            view = result_view(job.id) if number == 0 else discord.utils.MISSING
            if number == 0:
                message = await webhook.edit_message(
                    job.status_message_id or "@original",  # type: ignore[arg-type]
                    content=content,
                    embed=embed,
                    attachments=files,
                    view=view,
                    allowed_mentions=_render.NO_PINGS,
                )
                first_id = message.id
            else:
                await webhook.send(
                    content=content or discord.utils.MISSING,
                    embed=embed,
                    files=files,
                    wait=True,
                    allowed_mentions=_render.NO_PINGS,
                )
        return DeliveryReceipt(job.channel_id, first_id)

    async def _deliver_in_channel(self, job: Job, delivery: Delivery) -> DeliveryReceipt:
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        first_id: int | None = None
        for number, (content, embed, images) in enumerate(_messages_for(job, delivery)):
            lead = f"<@{job.user_id}>, your images are ready." if number == 0 else ""
            text = "\n".join(part for part in (lead, content or "") if part)
            message = await channel.send(
                content=text or None,
                embed=embed,
                files=_files(delivery, images),
                view=result_view(job.id) if number == 0 else discord.utils.MISSING,
                allowed_mentions=_requester_only(job.user_id) if number == 0 else _render.NO_PINGS,
            )
            if first_id is None:
                first_id = message.id
        return DeliveryReceipt(job.channel_id, first_id)


def _token_dead(error: discord.HTTPException) -> bool:
    return error.code in DEAD_TOKEN_CODES or error.status == 401


def _messages_for(job: Job, delivery: Delivery) -> list[tuple[str | None, discord.Embed, list[DeliverableImage]]]:
    """(content, embed, images) per message: links for images too large to upload go in the content."""
    groups = delivery.groups or [[]]
    parts = len(groups)
    out = []
    for number, images in enumerate(groups):
        links = _render.link_lines(images)
        out.append((links or None, _render.result_embed(job, delivery, number, parts), images))
    return out


def _files(delivery: Delivery, images: Sequence[DeliverableImage]) -> list[discord.File]:
    options = delivery.options
    return [
        discord.File(
            image.path,
            filename=image.filename,
            description=alt_text(options.prompt, image.index, options.count),
        )
        for image in images
        if image.path is not None
    ]
