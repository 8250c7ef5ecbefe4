"""Where a result goes when Discord refuses part of it: JobMessenger with Discord's HTTP calls recorded."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord
import pytest

from cogs.imagine import _render
from cogs.imagine._messenger import JobMessenger
from imaginebot.delivery import DeliverableImage
from imaginebot.jobs import Delivery, DeliveryFailed
from imaginebot.options import resolve_options
from imaginebot.store import Job

MEMBER, CHANNEL = 22, 33


def http_error(status: int, code: int, message: str) -> discord.HTTPException:
    response = SimpleNamespace(status=status, reason=message)
    kind = {403: discord.Forbidden, 404: discord.NotFound}.get(status, discord.HTTPException)
    return kind(response, {"code": code, "message": message})  # type: ignore[arg-type]


UNKNOWN_MESSAGE = http_error(404, 10008, "Unknown Message")
TOKEN_EXPIRED = http_error(401, 50027, "Invalid Webhook Token")
SERVER_ERROR = http_error(500, 0, "Internal Server Error")
MISSING_ACCESS = http_error(403, 50001, "Missing Access")


class RecordingMessenger(JobMessenger):
    """The real delivery logic; each Discord call is recorded, and fails when ``fail`` says so for its turn."""

    def __init__(self, fail: dict[tuple[str, int], Exception]) -> None:
        super().__init__(SimpleNamespace())  # type: ignore[arg-type]
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.dms: list[str] = []
        self.settled: list[str] = []

    def _record(self, where: str, fields: dict[str, Any]) -> SimpleNamespace:
        turn = sum(1 for called, _ in self.calls if called == where)
        self.calls.append((where, fields))
        error = self.fail.get((where, turn))
        if error is not None:
            raise error
        return SimpleNamespace(id=100 + len(self.calls))

    async def edit_status(self, job: Job, *, shows: str | None = None, **fields: Any) -> Any:
        return self._record("edit", fields)

    def webhook(self, job: Job) -> Any:
        async def send(content: Any = None, **fields: Any) -> Any:
            return self._record("followup", {"content": content, **fields})

        return SimpleNamespace(send=send)

    def _job_channel(self, job: Job) -> Any:
        async def send(content: Any = None, **fields: Any) -> Any:
            return self._record("channel", {"content": content, **fields})

        return SimpleNamespace(send=send)

    async def direct_message(self, job: Job, content: str) -> bool:
        self.dms.append(content)
        return True

    async def _settle_stale_status(self, job: Job, content: str) -> None:
        self.settled.append(content)

    def posted_images(self) -> int:
        return sum(len(fields.get("attachments") or fields.get("files") or []) for _, fields in self.calls)


def a_job() -> Job:
    options = resolve_options(prompt="three heavy images", count=3)
    return Job(
        id=7,
        guild_id=11,
        channel_id=CHANNEL,
        user_id=MEMBER,
        application_id=44,
        interaction_id=55,
        interaction_token="token",
        token_expires_at=datetime.now(UTC) + timedelta(minutes=10),
        options={"request": options.to_dict()},
        cost=300,
        state="running",
        created_at=datetime.now(UTC),
    )


def a_delivery(job: Job, parts: int) -> Delivery:
    def image(index: int) -> DeliverableImage:
        return DeliverableImage(
            index=index,
            path=None,
            filename=f"imagine-{index + 1}.png",
            size_bytes=4,
            link=None,
            link_expires_at=None,
            note=None,
            width=1024,
            height=1024,
            data=b"\x89PNG",
        )

    return Delivery(
        options=resolve_options(prompt="three heavy images", count=parts),
        groups=[[image(index)] for index in range(parts)],
        generation_seconds=1.0,
        reported_credits=None,
    )


async def test_a_deleted_status_message_gets_the_result_posted_anew() -> None:
    messenger = RecordingMessenger({("edit", 0): UNKNOWN_MESSAGE})
    job = a_job()
    receipt = await messenger.deliver(job, a_delivery(job, 1))
    assert [where for where, _ in messenger.calls] == ["edit", "followup"]
    followup = messenger.calls[1][1]
    assert len(followup["files"]) == 1 and followup["view"] is not None  # the images and their buttons
    assert receipt.message_id == 102


async def test_a_token_that_dies_between_parts_continues_in_the_channel_from_where_it_stopped() -> None:
    messenger = RecordingMessenger({("followup", 0): TOKEN_EXPIRED})
    job = a_job()
    receipt = await messenger.deliver(job, a_delivery(job, 3))
    assert [where for where, _ in messenger.calls] == ["edit", "followup", "channel", "channel"]
    assert messenger.posted_images() == 3 + 1  # the refused followup's image is posted once, in the channel
    first_in_channel = messenger.calls[2][1]
    assert first_in_channel["content"].startswith(f"<@{MEMBER}>, the rest of your images")
    assert first_in_channel["view"] is discord.utils.MISSING  # the buttons are under the first part already
    assert messenger.settled == []  # the status message holds the first part: not overwritten
    assert (receipt.message_id, receipt.extra_message_ids) == (101, (103, 104))


@pytest.mark.parametrize(
    ("fail", "told_in"),
    [
        ({("followup", 0): SERVER_ERROR}, "followup"),
        ({("followup", 0): aiohttp.ServerDisconnectedError()}, "followup"),  # a connection, not an answer
        ({("followup", 0): TOKEN_EXPIRED, ("channel", 0): MISSING_ACCESS, ("channel", 1): MISSING_ACCESS}, "dm"),
    ],
)
async def test_a_result_cut_short_is_refunded_and_said_beside_the_part_that_is_up(
    fail: dict[tuple[str, int], Exception], told_in: str
) -> None:
    messenger = RecordingMessenger(fail)
    job = a_job()
    with pytest.raises(DeliveryFailed):
        await messenger.deliver(job, a_delivery(job, 3))
    assert messenger.calls[0][0] == "edit"  # the first part is up, and stays as it is
    notice = messenger.dms[-1] if told_in == "dm" else messenger.calls[-1][1]["content"]
    assert "Only part of your result" in notice and "not charged" in notice
    assert messenger.settled == []


def test_the_result_says_which_images_did_not_come_and_charges_only_the_rest() -> None:
    job = a_job()  # 3 images asked for, 3 credits reserved
    delivery = dataclasses.replace(
        a_delivery(job, 1), options=resolve_options(prompt="three heavy images", count=3), missing=2, refunded=200
    )
    embed = _render.result_embed(job, delivery, 0, 1).to_dict()
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Cost"] == "1 credit"
    assert fields["Notes"] == "Of the 3 asked for, 2 images did not come from the generator: 2 credits refunded."


def test_the_result_tells_apart_images_not_sent_linked_and_not_fetched() -> None:
    job = dataclasses.replace(a_job(), cost=400)
    delivery = dataclasses.replace(
        a_delivery(job, 1),
        options=resolve_options(prompt="four images", count=4),
        missing=3,
        refunded=300,
        linked=1,
        lost=1,
    )
    fields = {field["name"]: field["value"] for field in _render.result_embed(job, delivery, 0, 1).to_dict()["fields"]}
    assert fields["Notes"] == (
        "Of the 4 asked for, 1 image did not come from the generator, 1 image could only be linked and 1 image "
        "could not be fetched: 3 credits refunded."
    )


async def test_a_broken_connection_on_the_cut_short_notice_still_ends_in_a_refund_and_a_dm() -> None:
    broken = aiohttp.ServerDisconnectedError
    messenger = RecordingMessenger({("followup", 0): broken(), ("followup", 1): broken()})
    job = a_job()
    with pytest.raises(DeliveryFailed):
        await messenger.deliver(job, a_delivery(job, 3))
    assert "Only part of your result" in messenger.dms[-1]


class StatusUnreachable(RecordingMessenger):
    """The real settling of the old status message, which the connection then fails."""

    async def _settle_stale_status(self, job: Job, content: str) -> None:
        await JobMessenger._settle_stale_status(self, job, content)

    async def _edit_status_in_channel(self, job: Job, shows: str, fields: dict[str, Any]) -> None:
        raise aiohttp.ServerDisconnectedError()


async def test_images_posted_in_the_channel_stay_delivered_when_the_old_status_cannot_be_reached() -> None:
    messenger = StatusUnreachable({})
    job = dataclasses.replace(a_job(), token_expires_at=datetime.now(UTC) - timedelta(minutes=1), status_message_id=5)
    receipt = await messenger.deliver(job, a_delivery(job, 1))  # a receipt: the job is delivered, not failed
    assert [where for where, _ in messenger.calls] == ["channel"] and receipt.message_id is not None
