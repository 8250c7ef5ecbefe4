"""Answering an interaction within Discord's 3 seconds, however slow the bot's database is.

Discord drops an interaction that has no answer 3 s after it was sent ("The application did not respond"). Most
answers need the store first (a reservation, a job, a limit), and a store can be slow: a burst on PostgreSQL, a
database server far away, a locked SQLite file. So an interaction not answered by the time it is DEFER_AT_AGE
seconds old is deferred, in the way its answer will come:

- ``public``: a request whose answer is a public message (``/imagine``, Re-roll): a public "thinking...", which
  the answer then replaces; a private refusal first removes it (``Deferral.withdraw``).
- ``private``: a command answered privately (``/quota``, ``/settings``): a private "thinking...", which the answer
  (a followup) replaces.
- ``update``: a button that answers by changing its own message (Cancel, Delete): a deferred update, which shows
  nothing; the message is then edited (or deleted) through ``@original``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

import aiohttp
import discord

log = logging.getLogger(__name__)
Interaction = discord.Interaction["ImagineBot"]
DeferralKind = Literal["public", "private", "update"]

# What a Discord request can fail with: Discord's refusal, a broken connection, or no answer in time.
DISCORD_FAILURES = (discord.HTTPException, aiohttp.ClientError, TimeoutError)
DEFER_AT_AGE = 2.0
# Discord's error code for a second answer to an interaction ("Interaction has already been acknowledged").
ALREADY_ACKNOWLEDGED = 40060
# What a public "thinking..." placeholder that could not be removed is turned into, before a private answer (the
# first followup after a deferral would otherwise replace it, in public).
ANSWERED_PRIVATELY = "-# Answered privately."
_NO_PINGS = discord.AllowedMentions.none()
_DEFERRAL_KEY = "imaginebot.deferral"


def failure_text(error: BaseException) -> str:
    """One of DISCORD_FAILURES, safe to log or show: Discord's answer, or only the type of a connection error
    (its text holds the request's URL, and with it the interaction's token)."""
    return str(error) if isinstance(error, discord.HTTPException) else type(error).__name__


def time_to_defer(interaction: Interaction) -> float:
    """Seconds until the interaction is DEFER_AT_AGE old, by Discord's clock (the id's timestamp); a local clock
    running behind counts from now."""
    age = max(0.0, (discord.utils.utcnow() - interaction.created_at).total_seconds())
    return max(0.0, DEFER_AT_AGE - age)


def deferral_for(interaction: Interaction, kind: DeferralKind = "public") -> Deferral:
    """The interaction's deferral timer, started at the first call (with that call's ``kind``)."""
    deferral: Deferral | None = interaction.extras.get(_DEFERRAL_KEY)
    if deferral is None:
        deferral = interaction.extras[_DEFERRAL_KEY] = Deferral(interaction, kind)
    return deferral


def answered(interaction: Interaction) -> bool:
    """Whether the member has (or is being given) their answer, by the code that set ``Deferral.settled``: an error
    after that must not be told as if nothing had happened."""
    deferral: Deferral | None = interaction.extras.get(_DEFERRAL_KEY)
    return deferral is not None and deferral.settled


async def reply_privately(interaction: Interaction, message: str, **extra: Any) -> None:
    """An ephemeral answer that pings nobody: the first response, or a followup once the interaction was deferred
    (a public "thinking..." placeholder is removed first)."""
    deferral: Deferral | None = interaction.extras.get(_DEFERRAL_KEY)
    deferred = deferral is not None and await deferral.deferred()  # waits for a deferral under way
    if deferral is not None:
        await deferral.withdraw()
    if not deferred and not interaction.response.is_done():
        try:
            await interaction.response.send_message(message, ephemeral=True, allowed_mentions=_NO_PINGS, **extra)
        except discord.HTTPException as error:
            # Answered already, though the bot never heard back (a deferral whose answer was lost, say).
            if error.code != ALREADY_ACKNOWLEDGED:
                raise
        else:
            _settle(deferral)
            return
    await interaction.followup.send(message, ephemeral=True, allowed_mentions=_NO_PINGS, **extra)
    _settle(deferral)


def _settle(deferral: Deferral | None) -> None:
    if deferral is not None:
        deferral.settled = True  # the member has their answer: a later error is not told as if nothing happened


async def acknowledge(interaction: Interaction, kind: DeferralKind) -> None:
    """Defer the interaction now (as ``kind``), unless its deferral already did: work that may take long follows."""
    await deferral_for(interaction, kind).deferred()
    if not interaction.response.is_done():
        await _defer(interaction, kind)


async def _defer(interaction: Interaction, kind: DeferralKind) -> None:
    if kind == "update":
        await interaction.response.defer()
    else:
        await interaction.response.defer(ephemeral=kind == "private", thinking=True)


class AnsweredInTime:
    """For a cog whose commands answer privately with ``reply_privately``: each is deferred (``private``) if it is
    not answered within DEFER_AT_AGE, its checks included."""

    async def interaction_check(self, interaction: Interaction, /) -> bool:
        """Start the interaction's deferral timer; never refuses."""
        deferral_for(interaction, "private")
        return True


class Deferral:
    """Defers the interaction if it is not answered by the time it is DEFER_AT_AGE seconds old."""

    def __init__(self, interaction: Interaction, kind: DeferralKind = "public") -> None:
        self.interaction = interaction
        self.kind = kind
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
            await _defer(self.interaction, self.kind)
        except (discord.HTTPException, discord.InteractionResponded) as error:
            log.warning("interaction %s: could not defer: %s", self.interaction.id, failure_text(error))
            return False
        except DISCORD_FAILURES as error:
            # No answer (a broken connection, a timeout): Discord may well have taken it, and by now the 3 s are
            # over, so answering as after a deferral is the only way left that can still work.
            log.warning("interaction %s: the deferral got no answer (%s)", self.interaction.id, failure_text(error))
        return True

    def stop(self) -> None:
        """No deferral from now on (one already under way goes on)."""
        self._timer.cancel()

    async def deferred(self) -> bool:
        """Whether the answer was deferred: it is then an edit of the "thinking..." placeholder, a followup (for a
        private one), or an edit of the button's message (for an update)."""
        self.stop()
        return self._task is not None and await self._task

    async def withdraw(self) -> None:
        """Remove a public "thinking..." placeholder, so that what follows can be said privately (once).

        If it cannot be removed it is edited into a neutral line: the first followup after a deferral replaces the
        placeholder, in public, whatever its ephemeral flag says. Other kinds posted nothing public to remove.
        """
        if not await self.deferred() or self._withdrawn or self.kind != "public":
            return
        self._withdrawn = True
        try:
            await self.interaction.delete_original_response()
            return
        except DISCORD_FAILURES as error:
            log.info("interaction %s: could not remove the placeholder: %s", self.interaction.id, failure_text(error))
        with contextlib.suppress(*DISCORD_FAILURES):
            await self.interaction.edit_original_response(content=ANSWERED_PRIVATELY, allowed_mentions=_NO_PINGS)
