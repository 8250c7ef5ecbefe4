"""A crash (SIGKILL) at an arbitrary moment of a busy queue loses nothing: after the restart every job is settled,
every credit is accounted for, every member is told, and no generation is sent twice."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from tests.e2e.harness import World, content_of
from tests.fakes.discord import FakeInteraction

SETTLED = ("delivered", "failed", "interrupted", "cancelled")


async def job_rows(world: World) -> dict[int, dict[str, Any]]:
    """Every job row, by interaction id."""
    return {row["interaction_id"]: row for row in await world.db.rows("SELECT * FROM jobs")}


async def ledger_by_job(world: World) -> dict[int, int]:
    """What the ledger holds against each job (reservations less refunds)."""
    rows = await world.db.rows(
        "SELECT job_id, SUM(amount) AS held FROM ledger WHERE job_id IS NOT NULL GROUP BY job_id"
    )
    return {row["job_id"]: int(row["held"]) for row in rows}


async def member_usage(world: World) -> dict[int, int]:
    """Each member's usage today as the quota reads it (the daily roll-up)."""
    rows = await world.db.rows(
        "SELECT user_id, SUM(amount) AS used FROM usage_daily WHERE scope = 'member' GROUP BY user_id"
    )
    return {row["user_id"]: int(row["used"]) for row in rows}


async def wait_until_settled(world: World, interactions: list[FakeInteraction], timeout: float) -> None:
    """Poll the job table until every interaction's job is in a final state."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await job_rows(world)
        if all(i.id in rows and rows[i.id]["state"] in SETTLED for i in interactions):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for every job to be settled: {rows}")
        await asyncio.sleep(0.05)


@pytest.mark.each_backend
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_crash_at_any_moment_settles_every_job_and_every_credit(world: World, seed: int) -> None:
    chance = random.Random(seed)
    world.onemin.latency = 0.4
    members = [world.member, world.other, world.moderator]
    members += [world.discord.add_member(world.guild, username=f"member{n}") for n in range(3)]
    await world.start_bot(MAX_CONCURRENT_JOBS="3", MAX_JOBS_PER_MEMBER="1")

    interactions: list[FakeInteraction] = []
    for round_number in range(2):
        for member in members:
            interactions.append(
                await world.imagine(member, prompt=f"{member.username} {round_number}", quality="low", count=1)
            )
    # Somewhere in the queue's life: some jobs delivered, some at the generator, some being posted, some queued.
    await asyncio.sleep(chance.uniform(0.3, 1.6))
    await world.restart_bot(crash=True)
    await wait_until_settled(world, interactions, timeout=60)
    await asyncio.sleep(0.5)  # anything still to be said about them

    rows = await job_rows(world)
    ledger = await ledger_by_job(world)
    states = sorted(rows[i.id]["state"] for i in interactions)
    for interaction in interactions:
        row = rows[interaction.id]
        held = ledger.get(row["id"], 0)
        if row["state"] == "delivered":
            assert held == row["cost"], (row["state"], held, row["cost"])
            images = sum(len(message.attachments) for message in interaction.messages)
            assert images == 1, f"job {row['id']} delivered with {images} images on Discord"
        else:
            assert held == 0, f"job {row['id']} {row['state']} but {held} still charged"
            # Refunded, so not on Discord: a result posted just before the crash is found and charged instead.
            assert not any(message.attachments for message in interaction.messages), row["state"]
            # The member was told: the status does not still say queued or generating.
            shown = content_of(interaction)
            assert "restart" in shown or "refunded" in shown or "not charged" in shown, (row["state"], shown)

    # The daily roll-up the quota reads agrees with the ledger, member by member.
    charged: dict[int, int] = {}
    for row in rows.values():
        charged[row["user_id"]] = charged.get(row["user_id"], 0) + ledger.get(row["id"], 0)
    assert {user: amount for user, amount in (await member_usage(world)).items() if amount} == {
        user: amount for user, amount in charged.items() if amount
    }

    # No generation was sent twice: a job cut short by the crash is refunded, never re-sent.
    prompts = [request["body"]["promptObject"]["prompt"] for request in world.onemin.requests]
    assert len(prompts) == len(set(prompts)), sorted(prompts)
    assert "delivered" in states, states  # the queue went on after the restart
