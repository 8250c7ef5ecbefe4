"""Pacing the gateway reader to the bot's answers (cogs/pacing.py)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import patch

import pytest
from discord.gateway import DiscordWebSocket
from discord.state import ConnectionState
from discord.webhook.async_ import AsyncWebhookAdapter

from cogs import pacing
from cogs.pacing import IntakePacer, pace_gateway_reading


class Clock:
    """A clock the test moves by hand (the pacer's own timeouts still run on the event loop's clock)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pacer_with_open(count: int, **settings: Any) -> IntakePacer:
    pacer = IntakePacer(**{"depth": 2, "hold_at_most": 5.0, **settings})
    for interaction_id in range(1, count + 1):
        pacer.received(interaction_id)
    return pacer


async def still_waiting(reading: asyncio.Task[None]) -> bool:
    await asyncio.sleep(0.02)
    return not reading.done()


async def test_the_reader_goes_on_while_few_interactions_wait_for_an_answer() -> None:
    pacer = pacer_with_open(2)
    await asyncio.wait_for(pacer.pace(), 0.1)
    assert pacer.holds == 0


async def test_the_reader_waits_until_the_bot_answers_one_too_many() -> None:
    pacer = pacer_with_open(4)
    reading = asyncio.create_task(pacer.pace())
    assert await still_waiting(reading)
    pacer.answered(1)  # 3 open, depth 2: still too many
    assert await still_waiting(reading)
    pacer.answered(2)
    await asyncio.wait_for(reading, 0.1)
    assert (pacer.holds, pacer.rests, pacer.open) == (1, 0, 2)


async def test_an_answer_for_an_interaction_never_counted_changes_nothing() -> None:
    pacer = pacer_with_open(3)
    reading = asyncio.create_task(pacer.pace())
    pacer.answered(99)
    assert await still_waiting(reading)
    pacer.answered(3)
    await asyncio.wait_for(reading, 0.1)


async def test_nothing_answered_for_a_while_means_the_bot_waits_on_something_else_so_the_reader_rests() -> None:
    clock = Clock()
    pacer = pacer_with_open(4, hold_at_most=0.02, rest=1.0, clock=clock)
    await asyncio.wait_for(pacer.pace(), 1)  # a slow database, say: nothing is answered within hold_at_most
    assert (pacer.holds, pacer.rests) == (1, 1)
    clock.now += 0.9
    await asyncio.wait_for(pacer.pace(), 0.01)  # resting: no wait, however many are open
    assert pacer.holds == 1
    clock.now += 0.2
    reading = asyncio.create_task(pacer.pace())
    assert await still_waiting(reading)  # rested: it waits again
    assert pacer.holds == 2
    reading.cancel()


async def test_the_waits_add_at_most_max_added_delay_before_the_reader_rests() -> None:
    clock = Clock()
    pacer = pacer_with_open(10, depth=9, max_added_delay=0.5, clock=clock)
    for answered in (1, 2, 3):
        reading = asyncio.create_task(pacer.pace())
        await asyncio.sleep(0)
        clock.now += 0.2  # each wait lasts 0.2 s before an answer comes
        pacer.answered(answered)
        pacer.received(100 + answered)  # and the reader reads the next one
        await asyncio.wait_for(reading, 0.1)
    assert (pacer.holds, pacer.rests) == (3, 1)  # 0.6 s waited in all: past 0.5, so it rests
    await asyncio.wait_for(pacer.pace(), 0.01)


async def test_the_last_wait_is_cut_to_what_is_left_of_max_added_delay() -> None:
    clock = Clock()
    pacer = pacer_with_open(4, hold_at_most=5.0, max_added_delay=0.03, clock=clock)
    await asyncio.wait_for(pacer.pace(), 1)
    assert pacer.rests == 1


async def test_catching_up_with_every_interaction_starts_the_next_burst_afresh() -> None:
    clock = Clock()
    pacer = pacer_with_open(3, max_added_delay=0.5, clock=clock)
    reading = asyncio.create_task(pacer.pace())
    await asyncio.sleep(0)
    clock.now += 0.4
    pacer.answered(1)
    await asyncio.wait_for(reading, 0.1)
    for interaction_id in (2, 3):
        pacer.answered(interaction_id)  # nothing open any more
    for interaction_id in (4, 5, 6):
        pacer.received(interaction_id)
    reading = asyncio.create_task(pacer.pace())
    await asyncio.sleep(0)
    clock.now += 0.4  # 0.8 s in all, but 0.4 since the bot caught up
    pacer.answered(4)
    await asyncio.wait_for(reading, 0.1)
    assert pacer.rests == 0


async def test_an_interaction_never_answered_stops_counting_after_discords_window() -> None:
    clock = Clock()
    pacer = pacer_with_open(3, forget_after=3.0, clock=clock)
    clock.now += 2.0
    pacer.received(4)
    clock.now += 1.5  # 1, 2 and 3 are 3.5 s old: never to be answered
    await asyncio.wait_for(pacer.pace(), 0.01)
    assert (pacer.open, pacer.holds) == (1, 0)


async def test_every_reader_waiting_goes_on_once_the_bot_caught_up() -> None:
    pacer = pacer_with_open(3)
    readers = [asyncio.create_task(pacer.pace()) for _ in range(2)]  # two shards' gateways
    await asyncio.sleep(0)
    pacer.answered(1)
    await asyncio.wait_for(asyncio.gather(*readers), 0.1)


async def test_the_hooks_count_an_interaction_from_its_event_to_its_first_response() -> None:
    read: list[Any] = []
    parsed: list[Any] = []
    responded: list[int] = []

    async def received_message(ws: Any, msg: Any, /) -> None:
        read.append(msg)

    def parse_interaction_create(state: Any, data: Any) -> None:
        parsed.append(data)

    async def answer() -> None:
        return None

    def create_interaction_response(adapter: Any, interaction_id: int, token: str, **kwargs: Any) -> Any:
        responded.append(interaction_id)
        return answer()

    with (
        patch.object(pacing, "_current", []),
        patch.object(DiscordWebSocket, "received_message", received_message),
        patch.object(ConnectionState, "parse_interaction_create", parse_interaction_create),
        patch.object(AsyncWebhookAdapter, "create_interaction_response", create_interaction_response),
    ):
        pacer = IntakePacer(depth=0, hold_at_most=5.0)
        pace_gateway_reading(pacer)
        pace_gateway_reading(pacer)  # twice: hooked once
        ConnectionState.parse_interaction_create(None, {"id": "7"})  # type: ignore[arg-type]
        assert (parsed, pacer.open) == ([{"id": "7"}], 1)
        reading = asyncio.create_task(DiscordWebSocket.received_message(None, "the next message"))  # type: ignore[arg-type]
        assert await still_waiting(reading)
        assert read == ["the next message"]  # read, then waits for the bot
        await AsyncWebhookAdapter.create_interaction_response(None, 7, "token", session=None, params=None)  # type: ignore[arg-type]
        await asyncio.wait_for(reading, 0.1)
        assert (responded, pacer.open) == ([7], 0)


def test_a_discord_py_without_the_hooks_is_left_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    read_before = DiscordWebSocket.received_message
    parse_before = ConnectionState.parse_interaction_create
    with (
        patch.object(pacing, "_current", []),
        patch.object(AsyncWebhookAdapter, "create_interaction_response", None),  # renamed in some later version
        patch.object(DiscordWebSocket, "received_message", read_before),
        patch.object(ConnectionState, "parse_interaction_create", parse_before),
    ):
        pace_gateway_reading(IntakePacer())
        assert DiscordWebSocket.received_message is read_before
        assert ConnectionState.parse_interaction_create is parse_before
    assert "no hooks for pacing" in caplog.text
