"""The Discord side of a job's life: its public status message, the delivered images, and every fallback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import discord

from cogs.answering import DISCORD_FAILURES, failure_text
from cogs.imagine import _render
from cogs.imagine._views import CancelButton, result_view
from imaginebot.delivery import DeliverableImage, alt_text
from imaginebot.jobs import Delivery, DeliveryFailed, DeliveryReceipt, job_options, requested_count
from imaginebot.options import ImagineOptions
from imaginebot.store import Job

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)

# Queue-position edits are sent at most this often per job, so a burst cannot trip Discord's rate limits.
STATUS_EDIT_INTERVAL = 5.0
# Treat a token as dead a little before Discord does, so a long upload does not start on a dying token.
TOKEN_MARGIN = timedelta(seconds=30)
# Room for link lines in one message: a bot's content is capped at 2000 characters, and the channel fallback
# puts a mention line first.
LINK_CONTENT_LIMIT = 1900
# The longest a status edit or a result waits for the job's first response to be confirmed by Discord (which
# wants it within 3 s anyway); after that it goes ahead and a refusal is handled as usual.
FIRST_RESPONSE_WAIT = 10.0
# How long a newer answer (a Cancel's) waits for the status edits already on their way before restating itself.
RESTATE_WAIT = 60.0
# A job still queued this long after its first response has its status message's id written to the job table,
# so that its status can be settled after a restart even if its token dies (see status_posted).
QUEUED_STATUS_KEEP_AFTER = 5.0
# Discord codes meaning the interaction token can no longer be used.
DEAD_TOKEN_CODES = {10015, 50027, 10062}
# What a status edit shows ("queued", "generating", ...) and the fields of the edit.
StatusEdit = tuple[str, dict[str, Any]]
# One message of a result: its content (links), its embed, the images it carries.
ResultMessage = tuple[str | None, discord.Embed | None, list[DeliverableImage]]


def _requester_only(user_id: int) -> discord.AllowedMentions:
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)], replied_user=False)


class JobMessenger:
    """Implements ``imaginebot.jobs.JobEvents`` with the interaction's webhook, the channel and DMs."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self._last_edit: dict[int, float] = {}
        self._pending: dict[int, asyncio.TimerHandle] = {}
        # What each job's status shows now ("queued", "generating", "rate-limited"), to know what a change needs.
        self._shown: dict[int, str] = {}
        # Jobs whose token Discord refused: no more status edits are tried on it.
        self._dead_tokens: set[int] = set()
        # Status edits and other background work in flight; kept so they are not garbage-collected before they end.
        self._tasks: set[asyncio.Task[None]] = set()
        # "Generating" edits in flight, which the result or a failure notice must come after.
        self._starting: dict[int, asyncio.Task[None]] = {}
        # First responses on their way to Discord: nothing may edit "@original" before it exists.
        self._answering: dict[int, asyncio.Future[None]] = {}
        # Each job's status message (its first response), to settle it as a channel message once the token died.
        self._status_ids: dict[int, int] = {}
        # Each job's status edits in flight (see status_edits_in_flight).
        self._edits: dict[int, set[asyncio.Task[None]]] = {}
        # Jobs found at start with part of a result already on their message (see posted_before): kept as it is.
        self._partly_posted: set[int] = set()
        # Jobs whose message could not be checked at start (posted_before failed): it may carry the result.
        self._unconfirmed: set[int] = set()

    # -- helpers ------------------------------------------------------------------------------------------------

    def webhook(self, job: Job) -> discord.Webhook:
        """The interaction's webhook: the original response and followups of the job's interaction."""
        return discord.Webhook.partial(job.application_id, job.interaction_token, client=self.bot)

    def _job_channel(self, job: Job) -> discord.PartialMessageable:
        """The channel the job was requested in, as the bot posts to it (no cache needed)."""
        return self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)

    @staticmethod
    def token_alive(job: Job) -> bool:
        """Whether the interaction token should still work, by the clock."""
        return datetime.now(UTC) < job.token_expires_at - TOKEN_MARGIN

    def token_usable(self, job: Job) -> bool:
        """Whether to try the interaction token: alive by the clock, and Discord has not refused it yet."""
        return job.id not in self._dead_tokens and self.token_alive(job)

    def _note_refusal(self, job: Job, error: discord.HTTPException) -> None:
        if _token_dead(error):
            self._dead_tokens.add(job.id)

    async def _first_response_settled(self, job: Job) -> None:
        """Wait until the job's first response was accepted or refused by Discord, if it is still on its way."""
        answer = self._answering.get(job.id)
        if answer is not None and not answer.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(answer), FIRST_RESPONSE_WAIT)

    async def edit_status(self, job: Job, *, shows: str | None = None, **fields: Any) -> discord.WebhookMessage:
        """Edit the job's status message (the interaction's original response)."""
        await self._first_response_settled(job)
        self._cancel_pending(job.id)
        self._last_edit[job.id] = time.monotonic()
        if shows is not None:
            self._shown[job.id] = shows
        message_id: Any = job.status_message_id or "@original"
        try:
            return await self.webhook(job).edit_message(message_id, allowed_mentions=_render.NO_PINGS, **fields)
        except discord.HTTPException as error:
            self._note_refusal(job, error)
            raise

    async def _edit_status_in_channel(self, job: Job, shows: str, fields: dict[str, Any]) -> None:
        """Past its token's 15 minutes (a job that waited long in the queue), the status message is edited as the
        bot's own message in the channel, if its id is known, so it does not keep an old place and a dead Cancel."""
        message_id = self._status_ids.get(job.id) or job.status_message_id
        if message_id is None:
            return
        self._last_edit[job.id] = time.monotonic()
        self._shown[job.id] = shows
        await self._job_channel(job).get_partial_message(message_id).edit(allowed_mentions=_render.NO_PINGS, **fields)

    def _cancel_pending(self, job_id: int) -> None:
        handle = self._pending.pop(job_id, None)
        if handle is not None:
            handle.cancel()

    def _throttled(self, job: Job, render: Callable[[], StatusEdit | None]) -> None:
        """Edit the status now, or once STATUS_EDIT_INTERVAL has passed since the last edit (latest wins).

        ``render`` runs when the edit is sent, so a delayed edit shows the state of that moment; None skips it.
        """
        wait = self._last_edit.get(job.id, 0.0) + STATUS_EDIT_INTERVAL - time.monotonic()
        self._cancel_pending(job.id)
        if wait <= 0:
            self._spawn(job, render)
            return
        loop = asyncio.get_running_loop()
        self._pending[job.id] = loop.call_later(wait, self._spawn, job, render)

    def _spawn(self, job: Job, render: Callable[[], StatusEdit | None]) -> asyncio.Task[None]:
        """Send a status edit in the background (``render`` decides it when it goes out); its task."""
        self._pending.pop(job.id, None)

        async def guarded() -> None:
            await self._first_response_settled(job)
            edit = render()
            if edit is None:
                return
            shows, fields = edit
            try:
                if self.token_usable(job):
                    try:
                        await self.edit_status(job, shows=shows, **fields)
                        return
                    except discord.HTTPException as error:
                        if not _token_dead(error):
                            raise
                await self._edit_status_in_channel(job, shows, fields)
            except discord.HTTPException as error:
                log.info("job %s: status edit refused by Discord: %s", job.id, error)
            except Exception as error:  # a broken connection: the next edit, or the result, will try again
                log.warning("job %s: status edit failed: %s", job.id, type(error).__name__)

        task = self._background(guarded())
        edits = self._edits.setdefault(job.id, set())
        edits.add(task)
        task.add_done_callback(lambda done: self._edit_done(job.id, done))
        return task

    def _edit_done(self, job_id: int, task: asyncio.Task[None]) -> None:
        edits = self._edits.get(job_id)
        if edits is not None:
            edits.discard(task)
            if not edits:
                del self._edits[job_id]

    def status_edits_in_flight(self, job_id: int) -> list[asyncio.Task[None]]:
        """The job's status edits already on their way: they may land after an answer given on another token."""
        return [task for task in self._edits.get(job_id, ()) if not task.done()]

    def restate_after(self, job: Job, edits: list[asyncio.Task[None]], fields: dict[str, Any]) -> None:
        """Once ``edits`` are done (if any), set the status to ``fields`` again, so that it is what stays.

        A Cancel click answers on its own token, so a "generating" edit already sent on the job's token could land
        after "Cancelled" and show a cancelled job as generating for good.
        """

        async def restate() -> None:
            if edits:
                await asyncio.wait(edits, timeout=RESTATE_WAIT)
            await self._spawn(job, lambda: ("settled", fields))
            self.forget(job.id)

        self._background(restate())

    def forget(self, job_id: int) -> None:
        """Drop the state kept for a finished job (and any status edit still waiting to be sent)."""
        self._cancel_pending(job_id)
        self._status_ids.pop(job_id, None)
        self._last_edit.pop(job_id, None)
        self._shown.pop(job_id, None)
        self._dead_tokens.discard(job_id)
        self._starting.pop(job_id, None)
        self.answered(job_id)

    async def tell(self, job: Job, content: str) -> None:
        """Say something to the requester about a job, on whichever channel still works."""
        if self.token_usable(job):
            try:
                await self.edit_status(job, content=content, view=None, embed=None)
                return
            except discord.HTTPException as error:
                log.info("job %s: token edit failed (%s); trying the channel", job.id, error)
        channel = self._job_channel(job)
        try:
            await channel.send(content, allowed_mentions=_requester_only(job.user_id))
        except discord.HTTPException as error:
            log.info("job %s: channel message failed (%s); trying a DM", job.id, error)
            await self.direct_message(job, content)
        await self._settle_stale_status(job, content)

    async def direct_message(self, job: Job, content: str) -> bool:
        """DM the requester where Discord allows it."""
        try:
            user = self.bot.get_user(job.user_id) or await self.bot.fetch_user(job.user_id)
            await user.send(content, allowed_mentions=_render.NO_PINGS)
            return True
        except DISCORD_FAILURES as error:
            log.info("job %s: could not DM the requester either: %s", job.id, failure_text(error))
            return False

    def first_response(self, job: Job, options: ImagineOptions, position: int | None) -> dict[str, Any]:
        """The fields of the job's first response: its status at this moment, generating (``position`` None) or
        queued with its position and a Cancel button. Later status edits count from now.

        Call it before the job's task can run, and ``answered`` once Discord took (or refused) the response:
        edits of the job's status and its result wait for that."""
        self._answering[job.id] = asyncio.get_running_loop().create_future()
        self._last_edit[job.id] = time.monotonic()
        fields: dict[str, Any] = {"allowed_mentions": _render.NO_PINGS}
        if position is None:
            self._shown[job.id] = "generating"
            fields["content"] = _render.generating_status(job, options, datetime.now(UTC))
        else:
            self._shown[job.id] = "queued"
            fields["content"] = _render.queued_status(job, options, position)
            fields["view"] = discord.ui.View(timeout=None).add_item(CancelButton(job.id))
        return fields

    def answered(self, job_id: int) -> None:
        """The job's first response went through or was refused (``token_refused`` first): edits may follow."""
        answer = self._answering.pop(job_id, None)
        if answer is not None and not answer.done():
            answer.set_result(None)

    def status_posted(self, job: Job, message_id: int | None, *, queued: bool) -> None:
        """Discord took the first response as message ``message_id``. A job that waits in the queue may outlive
        its token (15 minutes) and a restart, so if it is still waiting QUEUED_STATUS_KEEP_AFTER seconds later,
        its message id is also written to the job table; one that started by then keeps it in memory only (a
        burst's answers then cost no extra write)."""
        if message_id is None:
            return
        self._status_ids[job.id] = message_id
        if queued:
            asyncio.get_running_loop().call_later(QUEUED_STATUS_KEEP_AFTER, self._keep_status_id, job, message_id)

    def _keep_status_id(self, job: Job, message_id: int) -> None:
        if self.bot.is_closed():  # stopping: the store may be closed already
            return
        if self._status_ids.get(job.id) == message_id and self.bot.jobs.position(job.id) is not None:
            self._background(self._remember_status(job, message_id))

    async def _remember_status(self, job: Job, message_id: int) -> None:
        try:
            await self.bot.store.set_status_message(job.id, message_id)
        except Exception:
            log.warning("job %s: could not record its status message %s", job.id, message_id, exc_info=True)

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in a task kept until it ends (so it is not garbage-collected half way)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _settle_stale_status(self, job: Job, content: str) -> None:
        """The token is dead, so the status message still shows a state that is over ("queued", "generating"):
        edit it as the bot's own message in the channel instead (best effort; it may be gone or out of reach)."""
        try:
            await self._edit_status_in_channel(job, "settled", {"content": content, "embed": None, "view": None})
        except DISCORD_FAILURES as error:
            log.info("job %s: could not update its old status message: %s", job.id, failure_text(error))

    def token_refused(self, job: Job) -> None:
        """Discord refused the job's first response: its token has no message to edit, so post elsewhere."""
        self._dead_tokens.add(job.id)

    # -- JobEvents ----------------------------------------------------------------------------------------------

    async def on_queued(self, job: Job, position: int) -> None:
        """Show the job's place in the queue, with a Cancel button (the place as it is when the edit is sent)."""
        options = job_options(job)

        def render() -> StatusEdit | None:
            now = self.bot.jobs.position(job.id)
            if now is None:  # it started or was cancelled while the edit waited
                return None
            view = discord.ui.View(timeout=None)
            view.add_item(CancelButton(job.id))
            return "queued", {"content": _render.queued_status(job, options, now), "view": view}

        self._throttled(job, render)

    async def on_started(self, job: Job) -> None:
        """The job goes to the generator: swap the status, drop the Cancel button (unless the first response
        already said "generating"). The edit runs in the background so the generation request is not held up."""
        self._cancel_pending(job.id)
        if self._shown.get(job.id) == "generating":
            return
        content = _render.generating_status(job, job_options(job), datetime.now(UTC))
        self._starting[job.id] = self._spawn(job, lambda: ("generating", {"content": content, "view": None}))

    async def _before_last_word(self, job: Job) -> None:
        """Before the result or a failure notice: the first response is settled, no status edit is left waiting,
        and the "generating" edit, if one is in flight, is done (what comes next must replace it).

        Any older edit still on its way (a queue position, a 429's wait) is called off: discord.py sends an edit
        Discord answered with a 429 again after its wait, and in the channel (a job past its token) nothing keeps
        it from landing after the result and showing "queued" with a Cancel button for good.
        """
        await self._first_response_settled(job)
        self._cancel_pending(job.id)
        task = self._starting.pop(job.id, None)
        for older in self.status_edits_in_flight(job.id):
            if older is not task:
                older.cancel()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def on_rate_limited(self, job: Job, seconds: float, *, out_of_funds: bool = False) -> None:
        """The generator said 429: the job waits, with a Cancel button, and is sent again."""
        options = job_options(job)
        until = datetime.now(UTC) + timedelta(seconds=seconds)
        content = _render.rate_limited_status(job, options, seconds, until, out_of_funds=out_of_funds)

        def render() -> StatusEdit | None:
            if not self.bot.jobs.waiting(job.id):  # sent again, or cancelled, while the edit waited
                return None
            view = discord.ui.View(timeout=None)
            view.add_item(CancelButton(job.id))  # the generator has not taken it: Cancel still refunds it
            return "rate-limited", {"content": content, "view": view}

        self._throttled(job, render)

    async def on_resent(self, job: Job) -> None:
        """The job went to the generator again after a rate-limit wait."""
        if job.id in self._pending:
            # The rate-limit notice was never shown: the status still says "generating".
            self._cancel_pending(job.id)
            return
        if self._shown.get(job.id) == "rate-limited":
            content = _render.generating_status(job, job_options(job), datetime.now(UTC))
            self._throttled(job, lambda: ("generating", {"content": content, "view": None}))

    async def on_failed(self, job: Job, sentence: str) -> None:
        """One plain sentence about what went wrong; the job was refunded."""
        await self._before_last_word(job)
        try:
            await self.tell(job, _render.failure_message(job, sentence))
        finally:
            self.forget(job.id)

    async def on_interrupted(self, job: Job) -> None:
        """A restart cut the job short: tell the member on the same token (a followup) while it is valid."""
        self.forget(job.id)
        partly_posted = job.id in self._partly_posted
        self._partly_posted.discard(job.id)
        unconfirmed = job.id in self._unconfirmed
        self._unconfirmed.discard(job.id)
        content = _render.interrupted_message(job, partly_posted=partly_posted)
        if self.token_alive(job):
            try:
                # The status first: if it is still the "thinking" placeholder, an edit resolves it, where a
                # followup would replace it (and the edit would then overwrite the followup). Not when it already
                # carries part of the result: that stays for the member. When that could not be checked, only
                # the text changes: a result there keeps its images and its buttons.
                if not partly_posted:
                    with contextlib.suppress(discord.HTTPException):
                        await self.edit_status(
                            job,
                            content="⚠️ Interrupted by a restart (refunded).",
                            **({} if unconfirmed else {"view": None}),
                        )
                await self.webhook(job).send(content, allowed_mentions=_render.NO_PINGS)
                return
            except discord.HTTPException as error:
                log.info("job %s: followup about the restart failed: %s", job.id, error)
        if partly_posted:
            # Not tell(): it would edit the status, which is the part of the result that arrived.
            try:
                await self._job_channel(job).send(content, allowed_mentions=_requester_only(job.user_id))
            except DISCORD_FAILURES:
                await self.direct_message(job, content)
            return
        await self.tell(job, content)

    async def posted_before(self, job: Job) -> DeliveryReceipt | None:
        """After a stop between posting a result and recording it: where the result is, if the job's status message
        carries all its images; else None (not posted, only partly, or the token no longer tells). A message with
        part of a result (some images, links, the result's embed: split, or cut short) is noted, so that telling the
        member about the restart leaves it as it is."""
        if not self.token_alive(job):
            return None
        count = requested_count(job)
        if count is None:
            return None
        message_id: Any = job.status_message_id or "@original"
        try:
            message = await self.webhook(job).fetch_message(message_id)
        except discord.NotFound:
            return None
        except BaseException:
            # Discord could not say (down, or slower than the check's time limit, which cancels this): the message
            # may carry the whole result, so telling about the restart must not overwrite it (see on_interrupted).
            self._unconfirmed.add(job.id)
            raise
        attached = len([a for a in message.attachments if a.filename.startswith("imagine-")])
        if attached < count:
            if attached or message.embeds:  # a status has neither: this is (part of) the result
                self._partly_posted.add(job.id)
            return None
        return DeliveryReceipt(message.channel.id, message.id)

    async def deliver(self, job: Job, delivery: Delivery) -> DeliveryReceipt:
        """Post the images: on the interaction while its token lives, else in the channel, else explain by DM."""
        await self._before_last_word(job)
        try:
            return await self._deliver_anywhere(job, delivery)
        finally:
            self.forget(job.id)

    async def on_delivered(self, job: Job, delivery: Delivery, receipt: DeliveryReceipt) -> None:
        """The job is recorded as delivered: mention it in the server's log channel, if it has one."""
        await self._log_delivery(job, delivery, receipt)

    async def _log_delivery(self, job: Job, delivery: Delivery, receipt: DeliveryReceipt) -> None:
        """Post the generation in the server's log channel, if it has one, pinging nobody."""
        settings = await self.bot.policy.settings(job.guild_id)
        if settings.log_channel_id is None:
            return
        link = ""
        if receipt.message_id is not None:
            link = _render.message_link(job.guild_id, receipt.channel_id, receipt.message_id)
        content = _render.log_entry(job, delivery.options, link)
        try:
            channel = self.bot.get_partial_messageable(settings.log_channel_id, guild_id=job.guild_id)
            # As text: a link in the prompt must not unfold into a preview of whatever it points at.
            await channel.send(content, allowed_mentions=_render.NO_PINGS, suppress_embeds=True)
        except discord.HTTPException as error:
            log.warning("job %s: could not post in the log channel %s: %s", job.id, settings.log_channel_id, error)

    async def _deliver_anywhere(self, job: Job, delivery: Delivery) -> DeliveryReceipt:
        messages = _messages_for(job, delivery)
        posted: list[int] = []  # ids of the messages posted so far, in order
        refused_on_token: str | None = None  # why the upload on the live token was refused, if it was
        if self.token_usable(job):
            try:
                await self._deliver_on_token(job, delivery, messages, posted)
                return DeliveryReceipt(job.channel_id, posted[0], tuple(posted[1:]))
            except DISCORD_FAILURES as error:
                if isinstance(error, discord.HTTPException) and _token_dead(error):
                    self._note_refusal(job, error)
                    log.info("job %s: interaction token no longer works (%s); posting in the channel", job.id, error)
                else:
                    if posted:
                        await self._partly_delivered(job, len(posted), len(messages), error)
                    # Discord down past discord.py's retries, a connection reset (not retried on Linux), a refused
                    # upload: the images are made and paid for, so the channel gets its chance too.
                    refused_on_token = failure_text(error)
                    log.warning("job %s: posting the result failed (%s); trying the channel", job.id, refused_on_token)
        on_token = len(posted)
        try:
            await self._deliver_in_channel(job, delivery, messages[on_token:], posted)
        except DISCORD_FAILURES as error:
            if posted:
                await self._partly_delivered(job, len(posted), len(messages), error)
            reason = failure_text(error)
            if self.token_usable(job) or not isinstance(error, (discord.Forbidden, discord.NotFound)):
                # The token still answers (the upload was refused for another reason), or the channel failed for
                # a reason of Discord's: say so on the job's status (else in the channel, else by DM).
                log.warning("job %s: the channel would not take the result either: %s", job.id, reason)
                # The upload's own refusal says more to the member than the channel's (a 403 there, say).
                await self.tell(job, _render.undeliverable_message(job, refused_on_token or reason))
                raise DeliveryFailed(f"Discord would not take the result: {reason}") from error
            log.warning("job %s: cannot post in channel %s: %s", job.id, job.channel_id, reason)
            await self.direct_message(
                job,
                f"Your /imagine request ({_render.describe(delivery.options)}) in <#{job.channel_id}> could no longer "
                "be answered there (Discord's 15-minute window was over, or Discord refused the answer), and I may "
                "not post in that channel, so the images could not be delivered. "
                f"You were not charged ({_render.credits_text(job.cost)} refunded).",
            )
            raise DeliveryFailed("interaction token expired and the channel refused the bot") from error
        if not on_token:
            # The status message still shows "queued" or "generating": point it at the result.
            link = _render.message_link(job.guild_id, job.channel_id, posted[0])
            await self._settle_stale_status(job, _render.posted_in_channel_status(job, delivery.options, link))
        return DeliveryReceipt(job.channel_id, posted[0], tuple(posted[1:]))

    async def _partly_delivered(self, job: Job, posted: int, parts: int, error: Exception) -> None:
        """Part of the result is up and the rest cannot follow: say so beside it (the result stays), then fail the
        job, refunded: ``DeliveryFailed``. The member is not charged for images they did not all get."""
        reason = failure_text(error)
        log.warning("job %s: %d of %d result messages posted, then: %s", job.id, posted, parts, reason)
        content = _render.partly_delivered_message(job, posted, parts, reason)
        try:
            if self.token_usable(job):
                await self.webhook(job).send(content, allowed_mentions=_render.NO_PINGS)
            else:
                await self._job_channel(job).send(content, allowed_mentions=_render.NO_PINGS)
        except DISCORD_FAILURES:
            await self.direct_message(job, content)
        raise DeliveryFailed(f"only {posted} of {parts} result messages could be posted: {reason}") from error

    async def _deliver_on_token(
        self, job: Job, delivery: Delivery, messages: list[ResultMessage], posted: list[int]
    ) -> None:
        """Post ``messages`` on the interaction: the first into the status message, the rest as followups."""
        webhook = self.webhook(job)
        for number, (content, embed, images) in enumerate(messages):
            view = result_view(job.id) if number == 0 else discord.utils.MISSING
            message: discord.WebhookMessage | None = None
            if number == 0:
                try:
                    message = await self.edit_status(
                        job,
                        shows="delivered",
                        content=content,
                        embed=embed,
                        attachments=_files(delivery, images),
                        view=view,
                    )
                except discord.NotFound as error:
                    if _token_dead(error):
                        raise
                    # The status message was deleted while the job ran (a moderator tidying up): post it anew.
                    log.info("job %s: its status message is gone (%s); posting the result anew", job.id, error)
            if message is None:
                message = await webhook.send(
                    content=content or discord.utils.MISSING,
                    embed=embed or discord.utils.MISSING,
                    files=_files(delivery, images),
                    view=view,
                    wait=True,
                    allowed_mentions=_render.NO_PINGS,
                )
            posted.append(message.id)

    async def _deliver_in_channel(
        self, job: Job, delivery: Delivery, messages: list[ResultMessage], posted: list[int]
    ) -> None:
        """Post ``messages`` in the job's channel, the first mentioning the requester (the only ping allowed)."""
        channel = self._job_channel(job)
        for number, (content, embed, images) in enumerate(messages):
            first = number == 0
            lead = ""
            if first:
                ready = "your images are ready." if delivery.options.count > 1 else "your image is ready."
                lead = f"<@{job.user_id}>, " + ("the rest of your images." if posted else ready)
            text = "\n".join(part for part in (lead, content or "") if part)
            message = await channel.send(
                content=text or None,
                embed=embed,
                files=_files(delivery, images),
                view=result_view(job.id) if first and not posted else discord.utils.MISSING,
                allowed_mentions=_requester_only(job.user_id) if first else _render.NO_PINGS,
            )
            posted.append(message.id)


def _token_dead(error: discord.HTTPException) -> bool:
    return error.code in DEAD_TOKEN_CODES or error.status == 401


def _messages_for(job: Job, delivery: Delivery) -> list[ResultMessage]:
    """(content, embed, images) per message: links for images too large to upload go in the content.

    Links that do not fit one message's content (long presigned URLs) continue in messages of their own.
    """
    groups = delivery.groups or [[]]
    parts = len(groups)
    out: list[ResultMessage] = []
    for number, images in enumerate(groups):
        chunks = _chunks(_render.link_lines(images).splitlines(), LINK_CONTENT_LIMIT)
        out.append((chunks[0] if chunks else None, _render.result_embed(job, delivery, number, parts), images))
        out.extend((chunk, None, []) for chunk in chunks[1:])
    return out


def _chunks(lines: list[str], limit: int) -> list[str]:
    """Lines joined into texts of at most ``limit`` characters, a line never split (only clipped if alone too long)."""
    chunks: list[str] = []
    for line in lines:
        line = line if len(line) <= limit else line[: limit - 1] + "…"
        if chunks and len(chunks[-1]) + 1 + len(line) <= limit:
            chunks[-1] += "\n" + line
        else:
            chunks.append(line)
    return chunks


def _files(delivery: Delivery, images: Sequence[DeliverableImage]) -> list[discord.File]:
    options = delivery.options
    return [
        discord.File(
            io.BytesIO(image.data) if image.data is not None else image.path,
            filename=image.filename,
            description=alt_text(options.prompt, image.index, options.count),
        )
        for image in images
        if image.is_upload
    ]
