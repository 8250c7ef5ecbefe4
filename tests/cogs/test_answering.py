"""Answering within Discord's 3 seconds: what a deferral changes about later answers (cogs/answering.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import aiohttp
import discord
import pytest
from discord import app_commands

from bot import ImagineBot
from cogs.answering import ALREADY_ACKNOWLEDGED, answered, deferral_for, reply_privately
from tests.cogs.test_button_answers import FakeResponse


def command_interaction() -> Any:
    return SimpleNamespace(
        id=42,
        created_at=discord.utils.utcnow() - timedelta(seconds=0.1),
        extras={},
        command=None,
        response=FakeResponse(),
        followup=SimpleNamespace(send=AsyncMock()),
        delete_original_response=AsyncMock(),
        edit_original_response=AsyncMock(),
    )


async def test_an_error_after_the_member_was_answered_adds_nothing_and_removes_nothing() -> None:
    interaction = command_interaction()
    deferral = deferral_for(interaction, "public")
    deferral.settled = True  # e.g. /imagine's public status was posted, then something failed
    deferral.stop()
    error = app_commands.CommandInvokeError(MagicMock(), RuntimeError("after the status"))
    await ImagineBot.on_app_command_error(MagicMock(), interaction, error)
    assert not interaction.response.sent and not interaction.followup.send.await_count
    assert not interaction.delete_original_response.await_count  # the public status stays


async def test_a_private_answer_after_a_deferral_discord_took_silently_goes_as_a_followup() -> None:
    interaction = command_interaction()

    async def already_acknowledged(*args: Any, **kwargs: Any) -> None:
        response = SimpleNamespace(status=400, reason="Bad Request")
        raise discord.HTTPException(
            response,  # type: ignore[arg-type]
            {"code": ALREADY_ACKNOWLEDGED, "message": "Interaction has already been acknowledged."},
        )

    interaction.response.send_message = already_acknowledged
    await reply_privately(interaction, "Your limit is 10 credits per day.")
    interaction.followup.send.assert_awaited_once()
    assert interaction.followup.send.await_args.kwargs["ephemeral"]


async def test_a_deferral_that_got_no_answer_counts_as_deferred() -> None:
    """Discord may have taken it, and the 3 s are over by then: only answers that follow a deferral can work."""
    interaction = command_interaction()

    async def no_answer(**kwargs: Any) -> None:
        raise aiohttp.ServerDisconnectedError()

    interaction.response.defer = no_answer
    interaction.created_at = discord.utils.utcnow() - timedelta(seconds=2.5)  # due at once
    deferral = deferral_for(interaction, "private")
    await asyncio.sleep(0.05)
    assert await deferral.deferred()
    await reply_privately(interaction, "Your limit is 10 credits per day.")
    interaction.followup.send.assert_awaited_once()


async def test_a_private_answer_that_could_not_be_sent_leaves_the_member_unanswered() -> None:
    """So that the error handler still tries to tell them something."""
    interaction = command_interaction()
    deferral = deferral_for(interaction, "private")

    async def too_long(*args: Any, **kwargs: Any) -> None:
        raise discord.HTTPException(SimpleNamespace(status=400, reason="Bad Request"), {"code": 50035})  # type: ignore[arg-type]

    interaction.response.send_message = too_long
    with pytest.raises(discord.HTTPException):
        await reply_privately(interaction, "x" * 3000)
    assert not answered(interaction)
    deferral.stop()
