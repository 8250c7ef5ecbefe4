"""The buttons' answers when the bot's own side fails or its clock is off (the e2e tests cover the usual paths)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import discord
import pytest

from cogs.imagine import _actions
from imaginebot.options import resolve_options

REQUESTER = 100
JOB_ID = 7
RESULT_MESSAGE = 555


class FakeResponse:
    """``interaction.response``, recording what was answered."""

    def __init__(self) -> None:
        self.done = False
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def is_done(self) -> bool:
        return self.done

    async def send_message(self, content: str | None = None, **fields: Any) -> None:
        self.done = True
        self.sent.append(("send_message", {"content": content, **fields}))

    async def defer(self, **fields: Any) -> None:
        self.done = True
        self.sent.append(("defer", fields))

    async def send_modal(self, modal: discord.ui.Modal) -> None:
        self.done = True
        self.sent.append(("send_modal", {"modal": modal}))


def saved_job() -> SimpleNamespace:
    return SimpleNamespace(
        id=JOB_ID,
        guild_id=1,
        user_id=REQUESTER,
        options={"request": resolve_options(prompt="a lighthouse").to_dict()},
        result_message_id=RESULT_MESSAGE,
        result_channel_id=2,
        result_extra_message_ids=(),
    )


def click(*, user_id: int, age: float = 0.0, get_job: Any = None) -> Any:
    """A button press ``age`` seconds old by its id's timestamp."""
    return SimpleNamespace(
        id=42,
        created_at=discord.utils.utcnow() - timedelta(seconds=age),
        extras={},
        guild_id=1,
        user=SimpleNamespace(id=user_id),
        permissions=discord.Permissions(use_application_commands=True),
        client=SimpleNamespace(
            store=SimpleNamespace(get_job=get_job or AsyncMock(return_value=saved_job())),
            get_partial_messageable=MagicMock(),
        ),
        response=FakeResponse(),
        followup=SimpleNamespace(send=AsyncMock()),
        message=SimpleNamespace(id=RESULT_MESSAGE),
        delete_original_response=AsyncMock(),
    )


async def test_a_delete_whose_permission_check_fails_deletes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_is_moderator(_: Any) -> bool:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(_actions, "is_moderator", broken_is_moderator)
    interaction = click(user_id=999)  # not the requester: only a moderator could delete it
    await _actions.delete(interaction, JOB_ID)
    [(kind, fields)] = interaction.response.sent
    assert kind == "send_message" and fields["content"] == _actions.NOT_DELETED and fields["ephemeral"]
    assert not interaction.delete_original_response.await_count


async def test_edit_and_reroll_opens_its_editor_with_the_local_clock_ahead_of_discords() -> None:
    async def quick_read(job_id: int) -> SimpleNamespace:
        await asyncio.sleep(0.01)
        return saved_job()

    # 2.1 s old by the id's timestamp: a local clock that far ahead leaves no time before a deferral would come.
    interaction = click(user_id=REQUESTER, age=2.1, get_job=quick_read)
    await _actions.open_edit_modal(interaction, JOB_ID)
    [(kind, _)] = interaction.response.sent
    assert kind == "send_modal"


async def test_edit_and_reroll_behind_a_read_too_slow_asks_to_press_again() -> None:
    async def stuck_read(job_id: int) -> SimpleNamespace:
        await asyncio.sleep(10)
        return saved_job()

    interaction = click(user_id=REQUESTER, age=1.9, get_job=stuck_read)
    await asyncio.wait_for(_actions.open_edit_modal(interaction, JOB_ID), timeout=2)
    [(kind, fields)] = interaction.response.sent
    assert kind == "send_message" and fields["content"] == _actions.BUSY_FOR_MODAL and fields["ephemeral"]


def cancel_click(*, cancelled: bool, stopping: bool = False, state: str = "queued") -> Any:
    """A requester's Cancel press on a queued job, with the job service and messenger faked."""
    interaction = click(user_id=REQUESTER)
    job = saved_job()
    job.cost = 100
    job.state = state
    interaction.client.store.get_job = AsyncMock(return_value=job)
    interaction.client.jobs = SimpleNamespace(
        cancel=AsyncMock(return_value=cancelled),
        was_cancelled=AsyncMock(return_value=False),
        stopping=stopping,
        telling=contextlib.nullcontext,
    )
    interaction.client.messenger = SimpleNamespace(
        status_edits_in_flight=MagicMock(return_value=[]), forget=MagicMock(), restate_after=MagicMock()
    )
    interaction.edit_original_response = AsyncMock()
    return interaction


async def test_a_cancel_whose_click_cannot_change_the_status_says_so_through_the_jobs_token() -> None:
    interaction = cancel_click(cancelled=True)

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise discord.HTTPException(SimpleNamespace(status=400, reason="Bad Request"), {"code": 40060})  # type: ignore[arg-type]

    interaction.response.edit_message = refused
    await _actions.cancel(interaction, JOB_ID)
    # Cancelled and refunded: the status must not keep "queued" and its Cancel button.
    [(job, in_flight, fields)] = [call.args for call in interaction.client.messenger.restate_after.call_args_list]
    assert job.id == JOB_ID and in_flight == [] and "Cancelled" in fields["content"] and fields["view"] is None
    assert not interaction.followup.send.await_count  # and no "could not cancel" on top


async def test_a_cancel_while_the_bot_restarts_asks_to_press_again_later() -> None:
    interaction = cancel_click(cancelled=False, stopping=True)
    await _actions.cancel(interaction, JOB_ID)
    [(kind, fields)] = interaction.response.sent
    assert kind == "send_message" and fields["content"] == _actions.CANCEL_AFTER_RESTART and fields["ephemeral"]


async def test_edit_and_reroll_when_the_store_fails_says_the_editor_did_not_open() -> None:
    interaction = click(user_id=REQUESTER, get_job=AsyncMock(side_effect=ConnectionResetError("database gone")))
    await _actions.open_edit_modal(interaction, JOB_ID)
    [(kind, fields)] = interaction.response.sent
    assert kind == "send_message" and fields["content"] == _actions.EDITOR_NOT_OPENED and fields["ephemeral"]
