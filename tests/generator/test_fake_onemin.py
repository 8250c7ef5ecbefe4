"""The fake 1min.ai itself: it must enforce the reference's rules, speak its format and fail on request."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from yarl import URL

from tests.fakes.onemin import FakeOneMin, size_error

KEY = "fake-test-key"
REPO_ROOT = Path(__file__).resolve().parents[2]

# The keys of the reference's example response, so the fake cannot drift from it.
EXAMPLE_RECORD_KEYS = {
    "uuid",
    "userId",
    "teamId",
    "teamUser",
    "model",
    "type",
    "metadata",
    "rating",
    "feedback",
    "conversationId",
    "status",
    "createdAt",
    "aiRecordDetail",
    "additionalData",
    "temporaryUrl",
}


_DROP = object()  # marks a key to leave out of the promptObject


def payload(**prompt_changes: Any) -> dict[str, Any]:
    prompt_object: dict[str, Any] = {
        "prompt": "A serene Japanese garden",
        "size": "1024x1024",
        "quality": "medium",
        "n": 1,
        "output_format": "png",
    }
    for key, value in prompt_changes.items():
        if value is _DROP:
            prompt_object.pop(key, None)
        else:
            prompt_object[key] = value
    return {"type": "IMAGE_GENERATOR", "model": "gpt-image-2", "promptObject": prompt_object}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOneMin]:
    async with FakeOneMin(api_key=KEY) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as shared:
        yield shared


async def post(
    session: aiohttp.ClientSession,
    fake: FakeOneMin,
    body: Any,
    *,
    key: str | None = KEY,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["API-KEY"] = key
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(f"{fake.api_url}/api/features", data=data, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def post_json(session: aiohttp.ClientSession, fake: FakeOneMin, body: Any, **kwargs: Any) -> tuple[int, Any]:
    status, _headers, raw = await post(session, fake, body, **kwargs)
    return status, json.loads(raw)


# Validation


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"size": "1024x640"},  # exactly the minimum pixels
        {"size": "2880x2880"},  # exactly the maximum pixels
        {"size": "3072x1024"},  # exactly 3:1
        {"size": "1280x3840"},  # longest edge allowed, 3:1
        {"prompt": "x" * 4000, "n": 10, "quality": "high", "background": "opaque"},
        {"n": _DROP, "output_format": _DROP, "quality": "low"},
        {"output_format": "jpeg", "output_compression": 0},
        {"output_format": "webp", "output_compression": 100, "background": "auto"},
    ],
)
async def test_valid_requests_are_accepted(
    session: aiohttp.ClientSession, fake: FakeOneMin, changes: dict[str, Any]
) -> None:
    status, data = await post_json(session, fake, payload(**changes))
    assert status == 200, data
    assert fake.rejected == []
    record = data["aiRecord"]
    assert record["status"] == "SUCCESS"
    n = changes.get("n", 1)
    assert len(record["aiRecordDetail"]["resultObject"]) == (1 if n is _DROP else n)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"size": "1000x1000"}, "MISSING_REQUIRED_FIELDS"),  # not divisible by 16
        ({"size": "1024x624"}, "MISSING_REQUIRED_FIELDS"),  # too few pixels
        ({"size": "2880x2896"}, "MISSING_REQUIRED_FIELDS"),  # too many pixels
        ({"size": "4096x1024"}, "MISSING_REQUIRED_FIELDS"),  # edge over 3840
        ({"size": "3840x864"}, "MISSING_REQUIRED_FIELDS"),  # the reference's example: breaks 3:1
        ({"size": "3088x1024"}, "MISSING_REQUIRED_FIELDS"),  # just over 3:1
        ({"size": "1024X1024"}, "MISSING_REQUIRED_FIELDS"),
        ({"size": 1024}, "MISSING_REQUIRED_FIELDS"),
        ({"size": _DROP}, "MISSING_REQUIRED_FIELDS"),
        ({"prompt": ""}, "MISSING_REQUIRED_FIELDS"),
        ({"prompt": "   "}, "MISSING_REQUIRED_FIELDS"),
        ({"prompt": "x" * 4001}, "MISSING_REQUIRED_FIELDS"),
        ({"prompt": _DROP}, "MISSING_REQUIRED_FIELDS"),
        ({"quality": "ultra"}, "MISSING_REQUIRED_FIELDS"),
        ({"quality": _DROP}, "MISSING_REQUIRED_FIELDS"),
        ({"n": 0}, "MISSING_REQUIRED_FIELDS"),
        ({"n": 11}, "MISSING_REQUIRED_FIELDS"),
        ({"n": "2"}, "MISSING_REQUIRED_FIELDS"),
        ({"n": 2.0}, "MISSING_REQUIRED_FIELDS"),
        ({"n": True}, "MISSING_REQUIRED_FIELDS"),
        ({"background": "transparent"}, "MISSING_REQUIRED_FIELDS"),
        ({"output_format": "gif"}, "MISSING_REQUIRED_FIELDS"),
        ({"output_compression": 50}, "MISSING_REQUIRED_FIELDS"),  # with png
        ({"output_format": _DROP, "output_compression": 50}, "MISSING_REQUIRED_FIELDS"),
        ({"output_format": "jpeg", "output_compression": 101}, "MISSING_REQUIRED_FIELDS"),
        ({"output_format": "jpeg", "output_compression": -1}, "MISSING_REQUIRED_FIELDS"),
        ({"style": "vivid"}, "MISSING_REQUIRED_FIELDS"),
    ],
)
async def test_invalid_prompt_objects_are_rejected(
    session: aiohttp.ClientSession, fake: FakeOneMin, changes: dict[str, Any], code: str
) -> None:
    status, data = await post_json(session, fake, payload(**changes))
    assert status == 400
    assert data["errorCode"] == code
    assert isinstance(data["message"], str) and data["message"]
    assert len(fake.rejected) == 1


async def test_wrong_model_is_unsupported(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    status, data = await post_json(session, fake, {**payload(), "model": "dall-e-3"})
    assert (status, data["errorCode"]) == (400, "UNSUPPORTED_MODEL")
    assert fake.rejected


@pytest.mark.parametrize(
    "body",
    [
        {**payload(), "type": "CHAT"},
        {**payload(), "extra": 1},
        {"type": "IMAGE_GENERATOR", "model": "gpt-image-2"},
        {**payload(), "promptObject": "a garden"},
        [payload()],
    ],
)
async def test_invalid_bodies_are_rejected(session: aiohttp.ClientSession, fake: FakeOneMin, body: Any) -> None:
    status, data = await post_json(session, fake, body)
    assert status == 400 and data["errorCode"] == "MISSING_REQUIRED_FIELDS"
    assert len(fake.rejected) == 1


async def test_content_type_must_be_json(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    status, _headers, _raw = await post(session, fake, payload(), content_type="text/plain")
    assert status == 400
    assert len(fake.rejected) == 1


@pytest.mark.parametrize("key", [None, "wrong"])
async def test_missing_or_wrong_key_is_401(session: aiohttp.ClientSession, fake: FakeOneMin, key: str | None) -> None:
    status, data = await post_json(session, fake, payload(), key=key)
    assert (status, data) == (401, {"message": "Invalid API Key"})
    assert len(fake.rejected) == 1


def test_size_rules_directly() -> None:
    assert size_error("1536x1024") is None
    assert size_error("1024x1536") is None
    assert size_error("016x1024") is not None
    assert size_error("1024x1024 ") is not None
    assert "16" in (size_error("1000x1008") or "")
    assert "3:1" in (size_error("3840x864") or "")


async def test_requests_are_recorded_without_the_key(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    await post_json(session, fake, payload(prompt="hello"))
    (entry,) = fake.requests
    assert entry["body"]["promptObject"]["prompt"] == "hello"
    assert entry["answer"] == "success"
    assert all(name.lower() != "api-key" for name in entry["headers"])
    assert KEY not in str(entry)


# The success answer and its images


async def test_success_has_the_reference_shape(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    fake.report_credit = 42
    status, data = await post_json(session, fake, payload(n=3, background="auto"))
    assert status == 200
    record = data["aiRecord"]
    assert set(record) == EXAMPLE_RECORD_KEYS
    assert record["model"] == "gpt-image-2" and record["type"] == "IMAGE_GENERATOR"
    assert record["metadata"] == {"credit": 42}
    detail = record["aiRecordDetail"]
    assert detail["promptObject"] == payload(n=3, background="auto")["promptObject"]
    assert detail["responseObject"] == {}
    assert len(set(detail["resultObject"])) == 3
    url = record["temporaryUrl"]
    assert detail["resultObject"][0] in url
    for part in ("X-Amz-Date=", "X-Amz-Expires=604800", "X-Amz-Signature="):
        assert part in url
    _status, second = await post_json(session, fake, payload())
    assert second["aiRecord"]["uuid"] != record["uuid"]


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(URL(url, encoded=True)) as response:
        return response.status, dict(response.headers), await response.read()


@pytest.mark.parametrize(
    ("size", "fmt", "pil_format"),
    [("1536x1024", "png", "PNG"), ("1024x1536", "jpeg", "JPEG"), ("1280x768", "webp", "WEBP")],
)
async def test_images_are_real_and_distinct(
    session: aiohttp.ClientSession, fake: FakeOneMin, size: str, fmt: str, pil_format: str
) -> None:
    _status, data = await post_json(session, fake, payload(size=size, output_format=fmt, n=3))
    record = data["aiRecord"]
    paths = record["aiRecordDetail"]["resultObject"]
    width, height = (int(side) for side in size.split("x"))
    bodies = []
    for index, path in enumerate(paths):
        url = record["temporaryUrl"] if index == 0 else f"{fake.asset_url}/{path}"
        status, headers, raw = await fetch(session, url)
        assert status == 200
        assert headers["Content-Type"] == f"image/{fmt}"
        assert int(headers["Content-Length"]) == len(raw)
        with Image.open(io.BytesIO(raw)) as image:
            assert image.size == (width, height)
            assert image.format == pil_format
            image.load()
        bodies.append(raw)
    assert len(set(bodies)) == 3
    assert fake.download_routes == [("presigned", paths[0], 200), ("asset", paths[1], 200), ("asset", paths[2], 200)]
    assert fake.downloads == paths


async def test_every_asset_is_also_on_the_asset_host(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    _status, data = await post_json(session, fake, payload())
    path = data["aiRecord"]["aiRecordDetail"]["resultObject"][0]
    status, _headers, raw = await fetch(session, f"{fake.asset_url}/{path}")
    assert status == 200 and raw.startswith(b"\x89PNG")


async def test_presigned_url_needs_its_signature(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    _status, data = await post_json(session, fake, payload())
    url = data["aiRecord"]["temporaryUrl"]
    status, headers, _raw = await fetch(session, url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert status == 403 and headers["Content-Type"].startswith("application/xml")
    status, _headers, _raw = await fetch(session, f"{fake.asset_url}/development/images/nothing.png")
    assert status == 404


async def test_noisy_images_do_not_compress(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    fake.noisy = True
    _status, data = await post_json(session, fake, payload())
    _status, _headers, raw = await fetch(session, data["aiRecord"]["temporaryUrl"])
    assert len(raw) > 2_500_000
    with Image.open(io.BytesIO(raw)) as image:
        assert image.size == (1024, 1024)


# Failures on demand


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("500", 500, "application/json"),
        ("429", 429, "application/json"),
        ("429-html", 429, "text/html"),
        ("401", 401, "application/json"),
        ("503-html", 503, "text/html"),
        ("504", 504, "text/html"),
        ("200-failed", 200, "application/json"),
        ("moderation", 400, "application/json"),
        ("bad-json", 200, "application/json"),
        ("insufficient-credits", 400, "application/json"),
    ],
)
async def test_failure_kinds(
    session: aiohttp.ClientSession, fake: FakeOneMin, kind: str, status: int, content_type: str
) -> None:
    fake.fail_next(kind)
    got_status, headers, raw = await post(session, fake, payload())
    assert got_status == status
    assert headers["Content-Type"].startswith(content_type)
    assert "Retry-After" not in headers
    assert fake.requests[0]["answer"] == kind
    assert fake.rejected == []
    if kind == "200-failed":
        record = json.loads(raw)["aiRecord"]
        assert record["status"] == "FAILED" and record["aiRecordDetail"]["errorMessage"]
    if kind == "moderation":
        error = json.loads(raw)["error"]
        assert error["code"] == "moderation_blocked" and "rejected by the safety system" in error["message"]
    # Only the next request fails.
    assert (await post(session, fake, payload()))[0] == 200


async def test_429_carries_retry_after_when_asked(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    fake.fail_next("429", retry_after=5)
    fake.fail_next("429", retry_after=2.5)
    assert (await post(session, fake, payload()))[1]["Retry-After"] == "5"
    assert (await post(session, fake, payload()))[1]["Retry-After"] == "2.5"


async def test_times_and_order(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    fake.fail_next("500", times=2)
    fake.fail_next("401")
    statuses = [(await post(session, fake, payload()))[0] for _ in range(4)]
    assert statuses == [500, 500, 401, 200]


async def test_invalid_requests_do_not_use_up_a_queued_failure(
    session: aiohttp.ClientSession, fake: FakeOneMin
) -> None:
    fake.fail_next("500")
    assert (await post(session, fake, payload(n=0)))[0] == 400
    assert (await post(session, fake, payload()))[0] == 500


def test_unknown_failure_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        FakeOneMin().fail_next("teapot")


async def test_asset_failures(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    fake.fail_next("asset-flaky")
    _status, flaky = await post_json(session, fake, payload(n=2))
    fake.fail_next("asset-404")
    _status, missing = await post_json(session, fake, payload(n=2))

    flaky_paths = flaky["aiRecord"]["aiRecordDetail"]["resultObject"]
    for path in flaky_paths:
        url = f"{fake.asset_url}/{path}"
        assert [(await fetch(session, url))[0] for _ in range(3)] == [500, 200, 200]
    missing_record = missing["aiRecord"]
    first, second = missing_record["aiRecordDetail"]["resultObject"]
    assert (await fetch(session, missing_record["temporaryUrl"]))[0] == 200
    assert (await fetch(session, f"{fake.asset_url}/{second}"))[0] == 404
    assert first != second


async def test_latency_delays_answers(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    fake.latency = 0.3
    started = time.monotonic()
    assert (await post(session, fake, payload()))[0] == 200
    assert time.monotonic() - started >= 0.3


async def test_download_latency_delays_image_answers(session: aiohttp.ClientSession, fake: FakeOneMin) -> None:
    fake.download_latency = 0.3
    _status, data = await post_json(session, fake, payload())
    path = data["aiRecord"]["aiRecordDetail"]["resultObject"][0]
    started = time.monotonic()
    status, _headers, raw = await fetch(session, f"{fake.asset_url}/{path}")
    assert status == 200 and raw.startswith(b"\x89PNG")
    assert time.monotonic() - started >= 0.3


async def test_hang_is_released_by_close(session: aiohttp.ClientSession) -> None:
    fake = FakeOneMin(api_key=KEY)
    await fake.start()
    fake.fail_next("hang")
    pending = asyncio.ensure_future(post(session, fake, payload()))
    await asyncio.sleep(0.2)
    assert not pending.done()
    started = time.monotonic()
    await fake.close()
    with contextlib.suppress(aiohttp.ClientError):
        await asyncio.wait_for(pending, 3)
    assert time.monotonic() - started < 3


async def test_five_hundred_requests_at_once() -> None:
    async with (
        FakeOneMin(api_key=KEY) as fake,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        started = time.monotonic()
        results = await asyncio.gather(*(post(session, fake, payload(n=2, size="1536x1024")) for _ in range(500)))
        elapsed = time.monotonic() - started
    assert [status for status, _h, _b in results] == [200] * 500
    assert len(fake.requests) == 500 and fake.rejected == []
    assert elapsed < 10


async def test_runs_by_hand_and_prints_its_urls() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.onemin",
        "--port",
        "0",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        api_line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        asset_line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert api_line.startswith("ONEMIN_API_URL=http://127.0.0.1:")
        assert asset_line.startswith("ONEMIN_ASSET_URL=http://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            url = api_line.split("=", 1)[1] + "/api/features"
            headers = {"API-KEY": "test-key"}
            async with session.post(url, json=payload(), headers=headers) as response:
                assert response.status == 200
    finally:
        process.terminate()
        await process.wait()
