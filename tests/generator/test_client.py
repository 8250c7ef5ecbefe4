"""The generator client against the fake 1min.ai over loopback, and error_from_response on crafted answers."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from imaginebot.generator import (
    AuthenticationFailed,
    BadRequest,
    ContentRejected,
    DownloadedImage,
    GenerationFailed,
    GenerationRequest,
    GenerationResult,
    GeneratorClient,
    GeneratorError,
    GeneratorTimeout,
    InsufficientCredits,
    RateLimited,
    ServerError,
    error_from_response,
    parse_retry_after,
    presigned_expiry,
)
from imaginebot.generator import client as client_module
from tests.e2e.harness import wait_until
from tests.fakes.onemin import FakeOneMin

KEY = "sk-live-DO-NOT-LEAK-7f3a9c"
JSON = "application/json"
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def request(**changes: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "prompt": "a lighthouse at dawn",
        "width": 1024,
        "height": 1024,
        "quality": "medium",
        "count": 1,
        "output_format": "png",
    }
    fields.update(changes)
    return GenerationRequest(**fields)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOneMin]:
    async with FakeOneMin(api_key=KEY) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as shared:
        yield shared


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def client(fake: FakeOneMin, session: aiohttp.ClientSession, spool: Path) -> GeneratorClient:
    return GeneratorClient(
        session,
        api_key=KEY,
        api_url=fake.api_url,
        asset_url=fake.asset_url,
        read_timeout=5,
        download_timeout=5,
        spool_dir=spool,
        download_backoff=0.01,
    )


def spooled(directory: Path) -> list[str]:
    """Names of the files left in the spool directory."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def success_body(**record_changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "uuid": "rec-1",
        "status": "SUCCESS",
        "metadata": None,
        "aiRecordDetail": {
            "promptObject": {"prompt": "x", "size": "1024x1024", "quality": "low", "n": 2},
            "resultObject": ["development/images/a.png", "development/images/b.png"],
            "responseObject": {},
        },
        "temporaryUrl": "https://s3.example/a.png?X-Amz-Date=20250115T103000Z&X-Amz-Expires=604800",
    }
    record.update(record_changes)
    return {"aiRecord": record}


# The request on the wire


@pytest.mark.parametrize(
    ("changes", "expected_prompt_object"),
    [
        (
            {},
            {
                "prompt": "a lighthouse at dawn",
                "size": "1024x1024",
                "quality": "medium",
                "n": 1,
                "output_format": "png",
            },
        ),
        (
            {"width": 1536, "count": 3, "quality": "high", "background": "opaque"},
            {
                "prompt": "a lighthouse at dawn",
                "size": "1536x1024",
                "quality": "high",
                "n": 3,
                "output_format": "png",
                "background": "opaque",
            },
        ),
        (
            {"height": 1536, "quality": "low", "output_format": "webp", "compression": 0, "background": "auto"},
            {
                "prompt": "a lighthouse at dawn",
                "size": "1024x1536",
                "quality": "low",
                "n": 1,
                "output_format": "webp",
                "background": "auto",
                "output_compression": 0,
            },
        ),
    ],
)
async def test_payload_is_exactly_the_reference_shape(
    client: GeneratorClient, fake: FakeOneMin, changes: dict[str, Any], expected_prompt_object: dict[str, Any]
) -> None:
    await client.generate(request(**changes))

    assert fake.rejected == []
    assert len(fake.requests) == 1
    sent = fake.requests[0]
    assert sent["body"] == {"type": "IMAGE_GENERATOR", "model": "gpt-image-2", "promptObject": expected_prompt_object}
    assert sent["headers"]["Content-Type"] == "application/json"
    assert all(KEY not in value for value in sent["headers"].values())


def test_to_payload_leaves_out_unset_options() -> None:
    prompt_object = request().to_payload()["promptObject"]
    assert "background" not in prompt_object
    assert "output_compression" not in prompt_object
    assert request(compression=55, output_format="jpeg").to_payload()["promptObject"]["output_compression"] == 55


async def test_wrong_key_is_refused_as_authentication(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    wrong = GeneratorClient(session, api_key="not-the-key", api_url=fake.api_url, asset_url=fake.asset_url)
    with pytest.raises(AuthenticationFailed):
        await wrong.generate(request())
    assert len(fake.requests) == 1


# Results and downloads


@pytest.mark.parametrize(("fmt", "width", "height"), [("png", 1024, 1024), ("jpeg", 1536, 1024), ("webp", 1024, 1536)])
async def test_count_four_downloads_four_distinct_images_the_right_way(
    client: GeneratorClient, fake: FakeOneMin, fmt: str, width: int, height: int
) -> None:
    result = await client.generate(request(count=4, output_format=fmt, width=width, height=height))
    assert len(result.asset_paths) == 4
    assert result.temporary_url is not None

    images = await client.download(result)

    assert [image.index for image in images] == [0, 1, 2, 3]
    assert all(image.ok for image in images), [image.error for image in images]
    routes = {path: route for route, path, status in fake.download_routes if status == 200}
    assert routes == {
        result.asset_paths[0]: "presigned",
        result.asset_paths[1]: "asset",
        result.asset_paths[2]: "asset",
        result.asset_paths[3]: "asset",
    }
    assert images[0].source_url == result.temporary_url
    assert images[0].link_expires_at is not None
    assert [image.source_url for image in images[1:]] == [f"{fake.asset_url}/{p}" for p in result.asset_paths[1:]]
    assert all(image.link_expires_at is None for image in images[1:])
    digests = set()
    for image in images:
        assert image.path is not None
        data = image.path.read_bytes()
        assert image.size_bytes == len(data)
        assert image.content_type == f"image/{fmt}"
        digests.add(hashlib.sha256(data).hexdigest())
        with Image.open(image.path) as decoded:
            assert decoded.size == (width, height)
            assert decoded.format == PIL_FORMATS[fmt]
    assert len(digests) == 4
    assert fake.rejected == []


async def test_asset_paths_with_spaces_and_url_marks_are_fetched_by_their_own_name(
    client: GeneratorClient, fake: FakeOneMin
) -> None:
    fake.asset_label = "_a café? #1 50%_off"
    result = await client.generate(request(count=3))
    images = await client.download(result)
    assert all(image.ok for image in images), [image.error for image in images]
    assert sorted(path for _, path, status in fake.download_routes if status == 200) == sorted(result.asset_paths)
    assert images[1].source_url.endswith("_1_a%20caf%C3%A9%3F%20%231%2050%25_off.png")


async def test_downloads_land_in_the_spool_dir_and_discard_removes_them(client: GeneratorClient, spool: Path) -> None:
    images = await client.download(await client.generate(request(count=2)))
    paths = [image.path for image in images]
    assert all(path is not None and path.parent == spool for path in paths)
    for image in images:
        image.discard()
        image.discard()
    assert spooled(spool) == []


async def test_small_images_stay_in_memory_within_the_allowance(
    client: GeneratorClient, fake: FakeOneMin, spool: Path
) -> None:
    result = await client.generate(request(count=2, output_format="png"))
    on_disk = await client.download(result)
    sizes = [image.size_bytes for image in on_disk]
    for image in on_disk:
        image.discard()

    # Room for both: no file at all, the same bytes in memory.
    in_memory = await client.download(result, in_memory=2 * max(sizes))
    assert all(image.ok and image.path is None and image.data is not None for image in in_memory)
    assert [len(image.data or b"") for image in in_memory] == sizes
    with Image.open(io.BytesIO(in_memory[0].data or b"")) as decoded:
        assert decoded.format == "PNG"
    assert spooled(spool) == []

    # An allowance smaller than an image's share: that image goes to a file as before.
    spilled = await client.download(result, in_memory=2 * min(sizes) - 2)
    assert all(image.ok and image.path is not None and image.data is None for image in spilled)
    assert [image.size_bytes for image in spilled] == sizes


async def test_reported_credit_and_record_id_are_read(client: GeneratorClient, fake: FakeOneMin) -> None:
    fake.report_credit = 7
    result = await client.generate(request())
    assert result.reported_credits == 7
    assert result.record_id is not None and len(result.record_id) == 36
    assert result.elapsed >= 0


async def test_flaky_assets_are_retried(client: GeneratorClient, fake: FakeOneMin) -> None:
    fake.fail_next("asset-flaky")
    result = await client.generate(request(count=3))

    images = await client.download(result)

    assert all(image.ok for image in images), [image.error for image in images]
    for path in result.asset_paths:
        statuses = [status for _route, fetched, status in fake.download_routes if fetched == path]
        assert statuses == [500, 200]


async def test_missing_assets_come_back_as_failures_with_a_link(
    client: GeneratorClient, fake: FakeOneMin, spool: Path
) -> None:
    fake.fail_next("asset-404")
    result = await client.generate(request(count=3))

    images = await client.download(result)

    assert images[0].ok
    for image, path in zip(images[1:], result.asset_paths[1:], strict=True):
        assert image.path is None
        assert image.error is not None and "404" in image.error
        assert image.source_url == f"{fake.asset_url}/{path}"
        # A 404 is final: no pointless retries.
        assert fake.downloads.count(path) == 1
    assert len(spooled(spool)) == 1


async def test_retries_give_up_after_the_configured_attempts(
    session: aiohttp.ClientSession, fake: FakeOneMin, spool: Path
) -> None:
    one_try = GeneratorClient(
        session, api_key=KEY, api_url=fake.api_url, asset_url=fake.asset_url, download_attempts=1, spool_dir=spool
    )
    fake.fail_next("asset-flaky")
    result = await one_try.generate(request(count=2))

    images = await one_try.download(result)

    # Image 0's presigned fetch failed once; its asset-host fallback (the asset's second fetch) worked.
    assert images[0].ok
    assert images[0].source_url == f"{fake.asset_url}/{result.asset_paths[0]}"
    assert [(route, status) for route, path, status in fake.download_routes if path == result.asset_paths[0]] == [
        ("presigned", 500),
        ("asset", 200),
    ]
    # Image 1 has no fallback and only one attempt.
    assert images[1].path is None and "500" in (images[1].error or "")
    assert fake.downloads.count(result.asset_paths[1]) == 1
    assert images[0].path is not None
    assert spooled(spool) == [images[0].path.name]


async def test_a_broken_presigned_url_falls_back_to_the_asset_host(client: GeneratorClient, fake: FakeOneMin) -> None:
    result = await client.generate(request(count=2))
    assert result.temporary_url is not None
    tampered = GenerationResult(
        record_id=result.record_id,
        asset_paths=result.asset_paths,
        temporary_url=result.temporary_url.replace("X-Amz-Signature=", "X-Amz-Signature=bad"),
        reported_credits=None,
        elapsed=0.0,
    )

    images = await client.download(tampered)

    assert images[0].ok
    assert images[0].source_url == f"{fake.asset_url}/{result.asset_paths[0]}"
    assert ("presigned", result.asset_paths[0], 403) in fake.download_routes


async def test_presigned_url_query_is_sent_byte_for_byte(client: GeneratorClient, fake: FakeOneMin) -> None:
    result = await client.generate(request())
    assert result.temporary_url is not None and "%2F" in result.temporary_url
    images = await client.download(result)
    assert images[0].source_url == result.temporary_url
    assert [route for route, _, _ in fake.download_routes] == ["presigned"]


# Failures of the generation POST


@pytest.mark.parametrize(
    ("kind", "error_type", "words"),
    [
        ("500", ServerError, "problem on its side"),
        ("503-html", ServerError, "problem on its side"),
        ("bad-json", ServerError, "problem on its side"),
        ("504", GeneratorTimeout, "too long"),
        ("401", AuthenticationFailed, "API key"),
        ("429", RateLimited, "busy"),
        ("429-html", RateLimited, "busy"),
        ("200-failed", GenerationFailed, "upstream model"),
        ("moderation", ContentRejected, "safety"),
        ("insufficient-credits", InsufficientCredits, "out of funds"),
    ],
)
async def test_each_failure_maps_to_its_error_after_exactly_one_post(
    client: GeneratorClient, fake: FakeOneMin, kind: str, error_type: type[GeneratorError], words: str
) -> None:
    fake.fail_next(kind)

    with pytest.raises(GeneratorError) as caught:
        await client.generate(request())

    assert type(caught.value) is error_type
    message = caught.value.user_message
    assert words in message
    assert message[0].isupper() and message.endswith(".")
    assert "\n" not in message and "<" not in message and "{" not in message
    assert caught.value.detail
    assert len(fake.requests) == 1
    assert fake.rejected == []


async def test_the_next_request_after_a_failure_succeeds(client: GeneratorClient, fake: FakeOneMin) -> None:
    fake.fail_next("500")
    with pytest.raises(ServerError):
        await client.generate(request())
    result = await client.generate(request())
    assert result.asset_paths
    assert [entry["answer"] for entry in fake.requests] == ["500", "success"]


async def test_rate_limit_reads_retry_after_seconds(client: GeneratorClient, fake: FakeOneMin) -> None:
    fake.fail_next("429", retry_after=7)
    with pytest.raises(RateLimited) as caught:
        await client.generate(request())
    assert caught.value.retry_after == 7.0
    assert "7 seconds" in caught.value.user_message


async def test_html_rate_limit_has_no_retry_after(client: GeneratorClient, fake: FakeOneMin) -> None:
    fake.fail_next("429-html")
    with pytest.raises(RateLimited) as caught:
        await client.generate(request())
    assert caught.value.retry_after is None


async def test_read_timeout_gives_generator_timeout_quickly(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    impatient = GeneratorClient(session, api_key=KEY, api_url=fake.api_url, asset_url=fake.asset_url, read_timeout=0.3)
    fake.fail_next("hang")
    started = time.monotonic()

    with pytest.raises(GeneratorTimeout):
        await impatient.generate(request())

    assert time.monotonic() - started < 3
    assert len(fake.requests) == 1


async def test_slow_answers_within_the_read_timeout_succeed(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    patient = GeneratorClient(session, api_key=KEY, api_url=fake.api_url, asset_url=fake.asset_url, read_timeout=2)
    fake.latency = 0.3
    result = await patient.generate(request())
    assert result.elapsed >= 0.3


async def test_unreachable_generator_is_a_server_error(session: aiohttp.ClientSession) -> None:
    # Bind then release a port so nothing listens on it.
    probe = web.AppRunner(web.Application())
    await probe.setup()
    site = web.TCPSite(probe, "127.0.0.1", 0)
    await site.start()
    port = probe.addresses[0][1]
    await probe.cleanup()
    nowhere = GeneratorClient(session, api_key=KEY, api_url=f"http://127.0.0.1:{port}", connect_timeout=2)

    with pytest.raises(ServerError) as caught:
        await nowhere.generate(request())
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


async def tiny_server(handler: Any) -> tuple[web.AppRunner, str, list[str]]:
    """A one-route server for answers the fake does not give; returns the runner, its base URL and hits."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    # Handlers still running at cleanup (a server that never answers) are cut off at once.
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}", hits


async def test_a_key_echoed_by_the_server_is_redacted(session: aiohttp.ClientSession) -> None:
    async def echo_key(request: web.Request) -> web.Response:
        return web.json_response({"message": f"API key {request.headers['API-KEY']} is malformed"}, status=400)

    runner, base, _ = await tiny_server(echo_key)
    try:
        client = GeneratorClient(session, api_key=KEY, api_url=base)
        with pytest.raises(BadRequest) as caught:
            await client.generate(request())
    finally:
        await runner.cleanup()
    error = caught.value
    for text in (str(error), repr(error), error.detail, error.user_message, str(error.reason)):
        assert KEY not in text
    assert "[redacted]" in error.user_message


async def test_redirects_are_not_followed_so_the_key_stays_home(session: aiohttp.ClientSession) -> None:
    async def redirect(request: web.Request) -> web.Response:
        if request.path == "/api/features":
            raise web.HTTPFound("/elsewhere")
        return web.json_response(success_body())

    runner, base, hits = await tiny_server(redirect)
    try:
        client = GeneratorClient(session, api_key=KEY, api_url=base)
        with pytest.raises(ServerError):
            await client.generate(request())
    finally:
        await runner.cleanup()
    assert hits == ["/api/features"]


async def test_the_key_never_reaches_logs_or_errors(
    client: GeneratorClient, fake: FakeOneMin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    for kind in ["500", "429", "429-html", "401", "503-html", "504", "200-failed", "moderation", "bad-json"]:
        fake.fail_next(kind, retry_after=3)
        with pytest.raises(GeneratorError) as caught:
            await client.generate(request())
        errors.append(caught.value)
    fake.fail_next("asset-404")
    await client.download(await client.generate(request(count=2)))

    assert caplog.records, "expected the client to log something at DEBUG"
    for record in caplog.records:
        assert KEY not in record.getMessage()
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            assert KEY not in str(chain) and KEY not in repr(chain)
            chain = chain.__cause__
        assert KEY not in error.user_message and KEY not in error.detail
    assert KEY not in repr(client)


async def test_closed_client_refuses_work(fake: FakeOneMin, session: aiohttp.ClientSession) -> None:
    async with GeneratorClient(session, api_key=KEY, api_url=fake.api_url, asset_url=fake.asset_url) as client:
        await client.generate(request())
    with pytest.raises(RuntimeError):
        await client.generate(request())
    assert not session.closed
    assert len(fake.requests) == 1


async def test_empty_key_is_refused(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError):
        GeneratorClient(session, api_key="")


# error_from_response on crafted answers


def test_html_503_page_is_a_server_error_and_not_parsed() -> None:
    page = b"<html><head><title>503 Service Unavailable</title></head><body>{not json}</body></html>"
    error = error_from_response(503, "text/html; charset=UTF-8", page, {})
    assert type(error) is ServerError
    assert "503 Service Unavailable" in error.detail


def test_failed_record_with_safety_text_is_content_rejected() -> None:
    data = success_body(status="FAILED", temporaryUrl=None)
    data["aiRecord"]["aiRecordDetail"]["resultObject"] = []
    data["aiRecord"]["aiRecordDetail"]["errorMessage"] = "Your request was rejected by the safety system."
    error = error_from_response(200, JSON, body(data), {})
    assert type(error) is ContentRejected
    assert error.record_id == "rec-1"


def test_failed_record_without_safety_text_is_generation_failed_quoting_the_reason() -> None:
    data = success_body(status="FAILED")
    data["aiRecord"]["aiRecordDetail"]["errorMessage"] = "Upstream returned no image"
    data["aiRecord"]["aiRecordDetail"]["promptObject"]["prompt"] = "a safety inspector with a credit card"
    error = error_from_response(200, JSON, body(data), {})
    assert type(error) is GenerationFailed
    assert error.user_message == "The generator could not make the image: Upstream returned no image."


def test_an_empty_account_is_told_to_members_without_the_services_words_and_logged_with_them() -> None:
    error = error_from_response(400, JSON, body({"errorCode": "INSUFFICIENT_CREDITS", "message": "Please top up"}), {})
    assert isinstance(error, InsufficientCredits)
    assert "top up" not in error.user_message and "not your quota" in error.user_message
    assert "Please top up" in error.detail


def test_failed_record_with_credit_wording_is_insufficient_credits() -> None:
    data = success_body(status="FAILED")
    data["aiRecord"]["aiRecordDetail"]["errorMessage"] = "Not enough credits to complete this request"
    assert type(error_from_response(200, JSON, body(data), {})) is InsufficientCredits


def test_success_with_a_top_level_message_is_not_an_error() -> None:
    data = success_body()
    data["message"] = "Something went wrong, insufficient credits, rejected by the safety system"
    assert error_from_response(200, JSON, body(data), {}) is None


def test_top_level_temporary_url_is_read() -> None:
    data = success_body(temporaryUrl=None)
    data["temporaryUrl"] = "https://s3.example/top.png?X-Amz-Date=20250115T103000Z&X-Amz-Expires=60"
    assert error_from_response(200, JSON, body(data), {}) is None
    result = GenerationResult.from_json(data, elapsed=1.5)
    assert result.temporary_url == data["temporaryUrl"]
    assert result.asset_paths == ["development/images/a.png", "development/images/b.png"]
    assert result.elapsed == 1.5


def test_record_temporary_url_wins_over_top_level() -> None:
    data = success_body()
    data["temporaryUrl"] = "https://elsewhere.example/x.png"
    assert GenerationResult.from_json(data).temporary_url == data["aiRecord"]["temporaryUrl"]


def test_metadata_credit_is_recorded() -> None:
    result = GenerationResult.from_json(success_body(metadata={"credit": 12.5, "other": 1}))
    assert result.reported_credits == 12.5
    assert result.record_id == "rec-1"
    assert GenerationResult.from_json(success_body()).reported_credits is None


@pytest.mark.parametrize(
    ("status", "content_type", "payload", "expected"),
    [
        (200, "text/html", b"<html>maintenance</html>", ServerError),
        (200, JSON, b'{"aiRecord": {', ServerError),
        (200, JSON, b"[]", ServerError),
        (200, JSON, body({"message": "ok"}), ServerError),
        (200, JSON, body(success_body(temporaryUrl=None, aiRecordDetail={"resultObject": []})), ServerError),
        (200, JSON, body(success_body(aiRecordDetail={"resultObject": [1, 2]})), ServerError),
        (200, JSON, body({"error": {"code": "moderation_blocked", "message": "blocked"}}), ContentRejected),
        (400, JSON, body({"errorCode": "UNSUPPORTED_MODEL", "message": "Model not supported"}), BadRequest),
        (400, JSON, body({"errorCode": "MISSING_REQUIRED_FIELDS", "message": "prompt is required"}), BadRequest),
        (400, "text/html", b"<html>Bad Request</html>", BadRequest),
        (422, JSON, body({"message": ["size must be WxH", "n must be <= 10"], "error": "Bad Request"}), BadRequest),
        (400, JSON, body({"errorCode": "INSUFFICIENT_CREDITS", "message": "Top up"}), InsufficientCredits),
        (402, JSON, body({"message": "Payment Required"}), InsufficientCredits),
        (402, "text/html", b"<html>402</html>", InsufficientCredits),
        (403, JSON, body({"message": "Your balance is too low"}), InsufficientCredits),
        (400, JSON, body({"message": "Insufficient funds"}), InsufficientCredits),
        (429, JSON, body({"message": "Insufficient capacity, please retry later"}), RateLimited),
        (429, JSON, body({"message": "Not enough workers available"}), RateLimited),
        (429, JSON, body({"message": "Load balancer busy"}), RateLimited),
        (429, JSON, body({"errorCode": "INSUFFICIENT_BALANCE", "message": "Top up"}), RateLimited),  # delays
        (403, JSON, body({"error": "insufficient_balance"}), InsufficientCredits),
        (403, JSON, body({"message": "Forbidden"}), AuthenticationFailed),
        (403, JSON, body({"errorCode": "INSUFFICIENT_PERMISSIONS", "message": "Forbidden"}), AuthenticationFailed),
        (403, "text/html", b"<html><title>Attention Required! | Cloudflare</title></html>", ServerError),
        (401, JSON, body({"message": "Invalid API Key"}), AuthenticationFailed),
        (401, "text/html", b"<html>401</html>", AuthenticationFailed),
        (
            429,
            JSON,
            body({"error": {"code": "insufficient_quota", "message": "You exceeded your current quota"}}),
            RateLimited,  # a 429 never fails a job (the contract); the operator is told to top up
        ),
        (
            400,
            JSON,
            body({"error": {"code": "moderation_blocked", "message": "rejected by the safety system"}}),
            ContentRejected,
        ),
        (500, JSON, body({"errorMessage": "Request was rejected by the safety system"}), ContentRejected),
        (500, JSON, body({"message": "Internal server error"}), ServerError),
        (502, "text/html", b"<html>Bad gateway</html>", ServerError),
        (504, "text/html", b"<html>Gateway Time-out</html>", GeneratorTimeout),
        (524, "text/html", b"<html>A timeout occurred</html>", GeneratorTimeout),
        (404, "text/html", b"<html>Not Found</html>", ServerError),
        (302, "text/html", b"", ServerError),
    ],
)
def test_error_from_response_maps_answers(
    status: int, content_type: str, payload: bytes, expected: type[GeneratorError]
) -> None:
    error = error_from_response(status, content_type, payload, {})
    assert type(error) is expected
    assert error.user_message and error.detail


@pytest.mark.parametrize(
    ("message", "headers"),
    [
        ("Too many requests: 180 per minute. Your credits were not used.", {}),
        ("Rate limit reached; check your balance page for usage", {}),
        ("Insufficient balance", {"Retry-After": "30"}),  # told when to come back: a rate limit after all
    ],
)
def test_a_429_that_only_mentions_credits_delays_the_job(message: str, headers: dict[str, str]) -> None:
    error = error_from_response(429, JSON, body({"message": message}), headers)
    assert type(error) is RateLimited
    assert ("out of funds" in error.detail) == message.startswith("Insufficient")  # the operator is told to top up


def test_json_is_not_parsed_when_content_type_says_otherwise() -> None:
    # Looks like a safety refusal, but the page is declared text/plain: judged by status alone.
    payload = body({"error": {"code": "moderation_blocked"}})
    assert type(error_from_response(400, "text/plain", payload, {})) is BadRequest
    assert type(error_from_response(400, None, payload, {})) is BadRequest


@pytest.mark.parametrize("content_type", ["text/plain", "text/html; charset=utf-8", None])
def test_a_successful_generation_under_the_wrong_content_type_is_kept(content_type: str | None) -> None:
    # Paid for at the generator: a proxy's label must not throw the images away.
    assert error_from_response(200, content_type, body(success_body()), {}) is None
    failed = success_body(status="FAILED", errorMessage="no")
    assert type(error_from_response(200, content_type, body(failed), {})) is ServerError
    assert type(error_from_response(200, content_type, b"<html>ok</html>", {})) is ServerError


def test_bad_request_quotes_the_generator() -> None:
    error = error_from_response(400, JSON, body({"errorCode": "UNSUPPORTED_MODEL", "message": "Model x gone"}), {})
    assert error is not None
    assert error.user_message == "The generator refused the request: Model x gone."
    assert "UNSUPPORTED_MODEL" in error.detail


def test_quoted_reasons_are_kept_short() -> None:
    error = error_from_response(400, JSON, body({"message": "word " * 500}), {})
    assert error is not None
    assert len(error.user_message) < 400


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_rate_limit_retry_after_header(headers: dict[str, str], expected: float | None) -> None:
    error = error_from_response(429, JSON, body({"message": "Too many requests"}), headers)
    assert isinstance(error, RateLimited)
    assert error.retry_after == expected


def test_retry_after_as_http_date() -> None:
    now = datetime(2025, 1, 15, 10, 30, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    error = error_from_response(429, "text/html", b"<html>429</html>", {"Retry-After": soon})
    assert isinstance(error, RateLimited) and error.retry_after is not None
    assert 100 < error.retry_after <= 120


def test_presigned_expiry() -> None:
    url = "https://s3.example/a.png?X-Amz-Date=20250115T103000Z&X-Amz-Expires=604800&X-Amz-Signature=s"
    assert presigned_expiry(url) == datetime(2025, 1, 22, 10, 30, tzinfo=UTC)
    assert presigned_expiry("https://asset.1min.ai/a.png") is None
    assert presigned_expiry("https://s3.example/a.png?X-Amz-Date=garbage&X-Amz-Expires=1") is None
    assert presigned_expiry("https://s3.example/a.png?X-Amz-Date=20251315T103000Z&X-Amz-Expires=1") is None  # month 13
    assert presigned_expiry("https://s3.example/a.png?X-Amz-Expires=60&X-Amz-Date=20250115T103000Z") == datetime(
        2025, 1, 15, 10, 31, tzinfo=UTC
    )
    assert presigned_expiry("https://s3.example/a.png?X-Amz-Date=20250115T103000Z") is None  # no lifetime
    assert presigned_expiry("https://s3.example/a.png?x-X-Amz-Date=20250115T103000Z&X-Amz-Expires=60") is None
    assert presigned_expiry("https://s3.example/a.png?X-Amz-Date=20250115T103000Z&X-Amz-Expires=60x") is None


@given(
    signed_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)),
    lifetime=st.integers(min_value=0, max_value=10**9 - 1),
    before=st.lists(st.sampled_from(["X-Amz-Algorithm=AWS4-HMAC-SHA256", "x-id=GetObject", "a=b%26c"]), max_size=3),
    after=st.lists(st.sampled_from(["X-Amz-Signature=ab12", "X-Amz-SignedHeaders=host", "q="]), max_size=3),
)
def test_presigned_expiry_reads_what_a_query_parser_reads(
    signed_at: datetime, lifetime: int, before: list[str], after: list[str]
) -> None:
    stamp = signed_at.strftime("%Y%m%dT%H%M%SZ")
    query = "&".join([*before, f"X-Amz-Date={stamp}", *after[:1], f"X-Amz-Expires={lifetime}", *after[1:]])
    url = f"https://s3.us-east-1.amazonaws.com/asset.1min.ai/images/x.png?{query}"
    fields = parse_qs(urlsplit(url).query)
    expected = datetime.strptime(fields["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) + timedelta(
        seconds=int(fields["X-Amz-Expires"][0])
    )
    assert presigned_expiry(url) == expected


class SlowImages:
    """A storage server's handler that answers every image ``delay`` seconds after it was asked for, and counts
    the most requests it had at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.most = 0

    async def __call__(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        return web.Response(body=b"\x89PNG fake", content_type="image/png")


async def download_from(
    handler: Any, session: aiohttp.ClientSession, spool: Path, paths: list[str], **client_options: Any
) -> tuple[list[DownloadedImage], list[str]]:
    """Download ``paths`` from a tiny server answering with ``handler`` (the asset host); the images and the
    paths the server was asked for. Handlers still waiting when the download is over are cut off."""
    runner, base, hits = await tiny_server(handler)
    try:
        client = GeneratorClient(session, api_key=KEY, api_url=base, asset_url=base, spool_dir=spool, **client_options)
        images = await asyncio.wait_for(client.download(GenerationResult("r", paths, None, None, 0.0)), 5)
    finally:
        await runner.cleanup()
    return images, hits


async def test_downloads_run_concurrently(session: aiohttp.ClientSession, spool: Path) -> None:
    server = SlowImages(0.2)
    images, hits = await download_from(server, session, spool, [f"p/{i}.png" for i in range(5)])
    assert all(image.ok for image in images)
    assert server.most == 5
    assert sorted(hits) == [f"/p/{i}.png" for i in range(5)]


async def test_downloads_waiting_for_a_slow_server_do_not_hold_the_slots(
    session: aiohttp.ClientSession, spool: Path
) -> None:
    """Two slots, six images, a storage server with 0.2 s to its first byte: all six are asked for at once."""
    server = SlowImages(0.2)
    began = time.monotonic()
    images, _ = await download_from(server, session, spool, [f"p/{i}.png" for i in range(6)], download_slots=2)
    took = time.monotonic() - began
    assert all(image.ok for image in images)
    assert server.most == 6
    assert took < 0.5  # three rounds of two would take 0.6 s


async def test_a_storage_server_that_never_answers_times_out_and_is_retried(
    session: aiohttp.ClientSession, spool: Path
) -> None:
    async def silent(request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    images, hits = await download_from(
        silent, session, spool, ["a.png"], download_timeout=0.2, download_attempts=2, download_backoff=0.01
    )
    assert images[0].path is None and "timed out" in (images[0].error or "")
    assert len(hits) == 2


async def test_a_body_that_stops_arriving_times_out(session: aiohttp.ClientSession, spool: Path) -> None:
    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"\x89PNG" + b"\0" * 100)
        await asyncio.Event().wait()
        return response

    images, _ = await download_from(stalls, session, spool, ["a.png"], download_timeout=0.2, download_attempts=1)
    assert images[0].path is None and "timed out" in (images[0].error or "")
    assert spooled(spool) == []


async def test_waiting_for_a_download_slot_does_not_count_against_the_deadline(
    session: aiohttp.ClientSession, spool: Path
) -> None:
    """One slot, three images whose bodies take 0.15 s each, a 0.25 s deadline: all three arrive."""

    async def slow_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": "200"})
        await response.prepare(request)
        await response.write(b"\x89PNG" + b"\0" * 96)
        await asyncio.sleep(0.15)
        await response.write(b"\0" * 100)
        await response.write_eof()
        return response

    images, _ = await download_from(
        slow_body,
        session,
        spool,
        [f"p/{i}.png" for i in range(3)],
        download_timeout=0.25,
        download_attempts=1,
        download_slots=1,
    )
    assert [image.error for image in images] == [None, None, None]
    assert [image.size_bytes for image in images] == [200, 200, 200]


async def test_a_non_image_answer_is_not_saved(session: aiohttp.ClientSession, spool: Path) -> None:
    async def login_page(request: web.Request) -> web.Response:
        return web.Response(text="<html>please log in</html>", content_type="text/html")

    images, hits = await download_from(login_page, session, spool, ["a.png"])
    assert images[0].path is None and "not an image" in (images[0].error or "")
    assert len(hits) == 1
    assert spooled(spool) == []


@pytest.mark.parametrize("label", ["text/plain", "application/x-png", "text/html"])
async def test_an_image_under_a_wrong_label_is_kept(session: aiohttp.ClientSession, spool: Path, label: str) -> None:
    async def mislabelled(request: web.Request) -> web.Response:
        return web.Response(body=small_png(), headers={"Content-Type": label})

    images, _ = await download_from(mislabelled, session, spool, ["a.png"])
    assert images[0].error is None and images[0].size_bytes == len(small_png())


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(buffer, "PNG")
    return buffer.getvalue()


async def test_a_body_without_end_is_cut_at_the_largest_image_and_not_retried(
    session: aiohttp.ClientSession, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_IMAGE_BYTES", 2 * 1024 * 1024)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while True:
                await response.write(b"\0" * 65536)
        return response

    images, hits = await download_from(endless, session, spool, ["a.png"], download_attempts=3)
    assert images[0].path is None and "more than" in (images[0].error or "")
    assert len(hits) == 1  # a broken server is not asked again
    assert spooled(spool) == []


async def test_an_announced_body_larger_than_any_image_is_not_read(
    session: aiohttp.ClientSession, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_IMAGE_BYTES", 1000)

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG" + b"\0" * 5000, content_type="image/png")

    images, _ = await download_from(huge, session, spool, ["a.png"])
    assert images[0].path is None and "announced" in (images[0].error or "")


async def test_a_gzip_encoded_image_is_read_whole(session: aiohttp.ClientSession, spool: Path) -> None:
    png = small_png()

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(png), headers={"Content-Type": "image/png", "Content-Encoding": "gzip"})

    images, _ = await download_from(gzipped, session, spool, ["a.png"], download_attempts=1)
    assert images[0].ok, images[0].error
    assert images[0].data == png or (images[0].path is not None and images[0].path.read_bytes() == png)


async def cancel_a_download(
    session: aiohttp.ClientSession,
    spool: Path,
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
    paths: list[str],
    *,
    ready: Callable[[], Awaitable[object]],
    cancel_again_after: float | None = None,
) -> None:
    """Download ``paths`` from a server that answers with ``answer``; once ``ready()`` returns, cancel it (the bot
    is stopping), and again ``cancel_again_after`` seconds later if given. It must end cancelled and, once every
    worker thread has ended, have left no file in ``spool``."""
    runner, base, _ = await tiny_server(answer)
    try:
        client = GeneratorClient(session, api_key=KEY, api_url=base, asset_url=base, spool_dir=spool)
        downloading = asyncio.create_task(client.download(GenerationResult("r", paths, None, None, 0.0)))
        await ready()
        downloading.cancel()
        if cancel_again_after is not None:
            await asyncio.sleep(cancel_again_after)
            downloading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await downloading
    finally:
        await runner.cleanup()
    await asyncio.get_running_loop().shutdown_default_executor()  # every worker thread has ended
    assert spooled(spool) == []


async def test_a_download_cancelled_half_way_leaves_no_file(session: aiohttp.ClientSession, spool: Path) -> None:
    png = small_png() * 40  # over the in-memory size: written to a file

    async def fast_or_stuck(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("fast.png"):
            return web.Response(body=png, content_type="image/png")
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    async def fast_image_on_disk() -> None:
        await wait_until(lambda: len(spooled(spool)) == 1, 5, "the fast image on disk")

    await cancel_a_download(session, spool, fast_or_stuck, ["fast.png", "stuck.png"], ready=fast_image_on_disk)


async def test_a_download_cancelled_again_while_it_clears_up_still_leaves_no_file(
    session: aiohttp.ClientSession, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled (the stuck image ends at once, the one on a slow disk waits for its thread), then cancelled
    again while it waits to remove what it fetched, as asyncio.gather's caller may: the fetched file still goes."""
    png = small_png() * 40  # over the in-memory size: written to a file
    loop = asyncio.get_running_loop()
    slow_write_began = asyncio.Event()
    real_write = client_module._Spool.write

    def slow_for_the_third(self: Any, data: bytes) -> None:
        if "-2-" in self._prefix:  # image index 2
            loop.call_soon_threadsafe(slow_write_began.set)
            time.sleep(0.4)
        real_write(self, data)

    monkeypatch.setattr(client_module._Spool, "write", slow_for_the_third)

    async def images(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("stuck.png"):
            await asyncio.Event().wait()
        return web.Response(body=png, content_type="image/png")

    async def fast_on_disk_and_slow_writing() -> None:
        await wait_until(lambda: len(spooled(spool)) == 1, 5, "the fast image on disk")
        await slow_write_began.wait()

    paths = ["fast.png", "stuck.png", "slow.png"]
    await cancel_a_download(session, spool, images, paths, ready=fast_on_disk_and_slow_writing, cancel_again_after=0.1)


async def test_more_images_than_asked_for_are_cut_to_the_count(session: aiohttp.ClientSession) -> None:
    """Posting them would fail (alt text says "image 3 of 2"): the ones asked for are kept."""
    three = ["development/images/a.png", "development/images/b.png", "development/images/c.png"]

    async def generous(request: web.Request) -> web.Response:
        return web.json_response(success_body(aiRecordDetail={"resultObject": three}))

    runner, base, _ = await tiny_server(generous)
    try:
        client = GeneratorClient(session, api_key=KEY, api_url=base, asset_url=base)
        result = await client.generate(request(count=2))
    finally:
        await runner.cleanup()
    assert result.asset_paths == three[:2]


async def test_a_download_cancelled_while_its_first_write_waits_on_a_slow_disk_leaves_no_file(
    session: aiohttp.ClientSession, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"\x89PNG" + b"\0" * (600 * 1024)  # over the in-memory size: written to a file
    real_write = client_module._Spool.write

    def slow_write(self: Any, data: bytes) -> None:  # the thread is still before creating the file when cancelled
        time.sleep(0.3)
        real_write(self, data)

    monkeypatch.setattr(client_module._Spool, "write", slow_write)

    async def images(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/png")

    await cancel_a_download(session, spool, images, ["a.png", "b.png"], ready=lambda: asyncio.sleep(0.15))
