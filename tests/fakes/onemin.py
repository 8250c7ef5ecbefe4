"""A fake 1min.ai (GPT Image 2 generations and their assets) on loopback, speaking the real wire format.

It checks every generation request against the API reference's rules, answers like 1min.ai, serves real images of
the requested size and format, and can be told to fail in the ways the real service has been seen to fail.

Run by hand: ``python -m tests.fakes.onemin --port 8089`` prints the URLs to put in ONEMIN_API_URL / ONEMIN_ASSET_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import re
import secrets
import ssl
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiohttp import web
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

FAILURE_KINDS = frozenset(
    {
        "500",
        "429",
        "429-html",
        "401",
        "503-html",
        "504",
        "200-failed",
        "moderation",
        "hang",
        "bad-json",
        "insufficient-credits",
        "asset-404",
        "asset-flaky",
    }
)

# The reference's rules for promptObject.
MAX_PROMPT = 4000
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400
MAX_EDGE = 3840
MAX_RATIO = 3
QUALITIES = frozenset({"low", "medium", "high"})
BACKGROUNDS = frozenset({"auto", "opaque"})
FORMATS = frozenset({"png", "jpeg", "webp"})
PROMPT_KEYS = frozenset({"prompt", "size", "quality", "n", "background", "output_format", "output_compression"})
REQUIRED_PROMPT_KEYS = ("prompt", "size", "quality")
TOP_KEYS = frozenset({"type", "model", "promptObject"})

_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_PALETTE = [
    (220, 50, 47),
    (38, 139, 210),
    (133, 153, 0),
    (211, 54, 130),
    (181, 137, 0),
    (42, 161, 152),
    (108, 113, 196),
    (203, 75, 22),
    (88, 110, 117),
    (147, 161, 161),
]
# Images repeat after this many indexes (n is at most 10, so all images of one result differ).
_VARIANTS = len(_PALETTE)
_CHUNK = 64 * 1024

_HTML_PAGES = {
    429: ("429 Too Many Requests", "You are being rate limited."),
    503: ("503 Service Temporarily Unavailable", "The server is temporarily unable to service your request."),
    504: ("504 Gateway Time-out", "The upstream server did not answer in time."),
}


@dataclass(slots=True)
class _Asset:
    width: int
    height: int
    fmt: str
    index: int
    noisy: bool
    compression: int | None
    signature: str
    issued_queries: set[str] = field(default_factory=set)
    missing_on_asset_host: bool = False
    flaky: bool = False


class FakeOneMin:
    """The fake service. ``async with FakeOneMin() as fake:`` starts it on 127.0.0.1 and a free port.

    ``requests`` holds every generation POST (body and headers, API key removed) and what it was answered;
    ``rejected`` every request that broke the reference's rules (tests assert it stays empty); ``downloads`` the asset
    path of every image fetch, and ``download_routes`` (route, path, status) with route "presigned" or "asset".
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        latency: float = 0.0,
        download_latency: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.api_key = api_key
        # Served over HTTPS with this context (the client must trust its certificate), else plain HTTP.
        self.ssl_context = ssl_context
        self.latency = latency
        # Seconds before an image download's answer starts, like S3's time to first byte.
        self.download_latency = download_latency
        self.noisy = False
        # Words put into the asset paths as they are, like the real service's names made from the prompt
        # ("..._001_japanese_garden.png"): a client must percent-encode them in a URL.
        self.asset_label = ""
        self.report_credit: int | None = None
        self.requests: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.downloads: list[str] = []
        self.download_routes: list[tuple[str, str, int]] = []
        self.api_url = ""
        self.asset_url = ""
        self.base_url = ""
        self._failures: deque[tuple[str, float | None]] = deque()
        self._assets: dict[str, _Asset] = {}
        self._images: dict[tuple[int, int, str, int, bool, int | None], asyncio.Task[bytes]] = {}
        self._fetches: Counter[str] = Counter()
        self._closing: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    # lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port) and fill in ``api_url`` / ``asset_url``."""
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_post("/api/features", self._generate)
        app.router.add_get("/asset/{path:.+}", self._serve_asset)
        app.router.add_get("/s3/{path:.+}", self._serve_presigned)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        # A deep backlog so hundreds of simultaneous connections are not dropped and retried by the kernel.
        site = web.TCPSite(self._runner, host, port, backlog=1024, ssl_context=self.ssl_context)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        scheme = "https" if self.ssl_context is not None else "http"
        self.base_url = f"{scheme}://{bound_host}:{bound_port}"
        self.api_url = self.base_url
        self.asset_url = f"{self.base_url}/asset"

    async def close(self) -> None:
        """Release hanging requests and stop listening."""
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in self._images.values():
            task.cancel()

    async def __aenter__(self) -> FakeOneMin:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # test controls

    def fail_next(self, kind: str, *, times: int = 1, retry_after: float | None = None) -> None:
        """Make the next ``times`` valid generation requests fail as ``kind`` (queued after earlier failures)."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; expected one of {sorted(FAILURE_KINDS)}")
        for _ in range(times):
            self._failures.append((kind, retry_after))

    def presigned_url(self, path: str) -> str:
        """The presigned-looking URL the fake issues for ``path`` (valid only for assets it generated)."""
        asset = self._assets[path]
        now = datetime.now(UTC)
        query = (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Content-Sha256=UNSIGNED-PAYLOAD"
            f"&X-Amz-Credential=FAKEACCESSKEY%2F{now:%Y%m%d}%2Fus-east-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date={now:%Y%m%dT%H%M%SZ}&X-Amz-Expires=604800&X-Amz-Signature={asset.signature}"
            "&X-Amz-SignedHeaders=host&x-amz-checksum-mode=ENABLED&x-id=GetObject"
        )
        asset.issued_queries.add(query)
        return f"{self.base_url}/s3/{quote(path, safe='/')}?{query}"

    # generation

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        entry: dict[str, Any] = {
            "body": None,
            "headers": {k: v for k, v in request.headers.items() if k.lower() != "api-key"},
            "answer": None,
        }
        self.requests.append(entry)
        try:
            entry["body"] = json.loads(raw)
        except ValueError:
            entry["body"] = raw.decode("utf-8", "replace")

        if request.headers.get("API-KEY") != self.api_key:
            self.rejected.append("missing or wrong API-KEY header")
            entry["answer"] = "401"
            return web.json_response({"message": "Invalid API Key"}, status=401)
        problem = _validate(request.content_type, entry["body"])
        if problem is not None:
            code, message = problem
            self.rejected.append(f"{code}: {message}")
            entry["answer"] = f"400 {code}"
            return web.json_response({"errorCode": code, "message": message}, status=400)

        kind, retry_after = self._failures.popleft() if self._failures else (None, None)
        entry["answer"] = kind or "success"
        assert self._closing is not None
        if kind == "hang":
            await self._closing.wait()
            return web.Response(status=503, text="shutting down")
        await self._pause(self.latency)
        if kind is not None and not kind.startswith("asset-"):
            return _failure(kind, retry_after, entry["body"])
        return await self._success(entry["body"], kind)

    async def _success(self, body: dict[str, Any], kind: str | None) -> web.Response:
        prompt_object = body["promptObject"]
        width, height = (int(side) for side in prompt_object["size"].split("x"))
        fmt = prompt_object.get("output_format", "png")
        count = prompt_object.get("n", 1)
        record_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        paths = []
        for index in range(count):
            path = f"development/images/{now:%Y_%m_%d_%H_%M_%S}_{record_id}_{index}{self.asset_label}.{fmt}"
            self._assets[path] = _Asset(
                width=width,
                height=height,
                fmt=fmt,
                index=index,
                noisy=self.noisy,
                compression=prompt_object.get("output_compression"),
                signature=secrets.token_hex(32),
                missing_on_asset_host=kind == "asset-404" and index > 0,
                flaky=kind == "asset-flaky",
            )
            paths.append(path)
        # Encoding now keeps the first downloads fast and shares the work between identical requests.
        await asyncio.gather(*(self._image_bytes(self._assets[p]) for p in paths))
        record = _record(record_id, now, prompt_object, "SUCCESS", paths)
        record["temporaryUrl"] = self.presigned_url(paths[0])
        if self.report_credit is not None:
            record["metadata"] = {"credit": self.report_credit}
        return web.json_response({"aiRecord": record})

    # assets

    async def _serve_asset(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "asset")

    async def _serve_presigned(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "presigned")

    async def _serve(self, request: web.Request, route: str) -> web.StreamResponse:
        path = request.match_info["path"]
        self.downloads.append(path)
        asset = self._assets.get(path)
        status = 200
        if asset is None:
            status = 404
        elif route == "presigned" and request.raw_path.partition("?")[2] not in asset.issued_queries:
            # Like S3, any change to the signed query (even re-encoding it) voids the signature.
            status = 403
        else:
            self._fetches[path] += 1
            if asset.flaky and self._fetches[path] == 1:
                status = 500
            elif route == "asset" and asset.missing_on_asset_host:
                status = 404
        self.download_routes.append((route, path, status))
        if status != 200:
            return _s3_error(status)
        assert asset is not None
        data = await self._image_bytes(asset)
        await self._pause(self.download_latency)
        response = web.StreamResponse(status=200)
        response.content_type = _MIME[asset.fmt]
        response.content_length = len(data)
        await response.prepare(request)
        view = memoryview(data)
        for start in range(0, len(data), _CHUNK):
            await response.write(view[start : start + _CHUNK])
        await response.write_eof()
        return response

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (a latency), or less if the fake is closing."""
        assert self._closing is not None
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    def _image_bytes(self, asset: _Asset) -> asyncio.Task[bytes]:
        key = (asset.width, asset.height, asset.fmt, asset.index % _VARIANTS, asset.noisy, asset.compression)
        task = self._images.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(asyncio.to_thread(render_image, *key))
            self._images[key] = task
        return task


def render_image(width: int, height: int, fmt: str, variant: int, noisy: bool, compression: int | None) -> bytes:
    """Encode a ``width`` x ``height`` image in ``fmt``; each variant has its own colour and number of bars.

    A noisy image is random pixels, so it does not compress (a 1024x1024 PNG is about 3 MB).
    """
    if noisy:
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        colour = _PALETTE[variant % len(_PALETTE)]
        image = Image.new("RGB", (width, height), colour)
        draw = ImageDraw.Draw(image)
        shade = tuple(c // 2 for c in colour)
        cell = 64
        for y in range(0, height, cell):
            for x in range((y // cell) % 2 * cell, width, 2 * cell):
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=shade)
        # variant + 1 white bars at the top say which image this is.
        bar = max(8, width // 40)
        for i in range(variant + 1):
            left = bar + i * 2 * bar
            draw.rectangle((left, bar, left + bar - 1, bar * 5), fill=(255, 255, 255))
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, "PNG", compress_level=1)
    elif fmt == "jpeg":
        image.save(out, "JPEG", quality=compression if compression is not None else 85)
    else:
        image.save(out, "WEBP", quality=compression if compression is not None else 80, method=0)
    return out.getvalue()


def _validate(content_type: str, body: Any) -> tuple[str, str] | None:
    """The first way ``body`` breaks the reference's rules, as (errorCode, message), or None."""
    if content_type != "application/json":
        return "MISSING_REQUIRED_FIELDS", f"Content-Type must be application/json, got {content_type or 'none'}"
    if not isinstance(body, dict):
        return "MISSING_REQUIRED_FIELDS", "the body must be a JSON object"
    for key in ("type", "model", "promptObject"):
        if key not in body:
            return "MISSING_REQUIRED_FIELDS", f"{key} is required"
    if unknown := set(body) - TOP_KEYS:
        return "MISSING_REQUIRED_FIELDS", f"unknown fields: {sorted(unknown)}"
    if body["type"] != "IMAGE_GENERATOR":
        return "MISSING_REQUIRED_FIELDS", f"type must be IMAGE_GENERATOR, got {body['type']!r}"
    if body["model"] != "gpt-image-2":
        return "UNSUPPORTED_MODEL", f"Model {body['model']!r} is not supported"
    prompt_object = body["promptObject"]
    if not isinstance(prompt_object, dict):
        return "MISSING_REQUIRED_FIELDS", "promptObject must be an object"
    for key in REQUIRED_PROMPT_KEYS:
        if key not in prompt_object:
            return "MISSING_REQUIRED_FIELDS", f"promptObject.{key} is required"
    if unknown := set(prompt_object) - PROMPT_KEYS:
        return "MISSING_REQUIRED_FIELDS", f"unknown promptObject fields: {sorted(unknown)}"
    prompt = prompt_object["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        return "MISSING_REQUIRED_FIELDS", "prompt must be a non-empty string"
    if len(prompt) > MAX_PROMPT:
        return "MISSING_REQUIRED_FIELDS", f"prompt is longer than {MAX_PROMPT} characters"
    if (size_problem := size_error(prompt_object["size"])) is not None:
        return "MISSING_REQUIRED_FIELDS", size_problem
    if prompt_object["quality"] not in QUALITIES:
        return "MISSING_REQUIRED_FIELDS", f"quality must be one of {sorted(QUALITIES)}"
    n = prompt_object.get("n", 1)
    if not _is_int(n) or not 1 <= n <= 10:
        return "MISSING_REQUIRED_FIELDS", "n must be an integer from 1 to 10"
    if "background" in prompt_object and prompt_object["background"] not in BACKGROUNDS:
        return "MISSING_REQUIRED_FIELDS", f"background must be one of {sorted(BACKGROUNDS)}"
    fmt = prompt_object.get("output_format")
    if "output_format" in prompt_object and fmt not in FORMATS:
        return "MISSING_REQUIRED_FIELDS", f"output_format must be one of {sorted(FORMATS)}"
    if "output_compression" in prompt_object:
        compression = prompt_object["output_compression"]
        if not _is_int(compression) or not 0 <= compression <= 100:
            return "MISSING_REQUIRED_FIELDS", "output_compression must be an integer from 0 to 100"
        if fmt not in ("jpeg", "webp"):
            return "MISSING_REQUIRED_FIELDS", "output_compression only applies when output_format is jpeg or webp"
    return None


def size_error(size: Any) -> str | None:
    """Why ``size`` is not a valid gpt-image-2 size ("WxH" under all five rules), or None when it is."""
    if not isinstance(size, str) or not (match := re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", size)):
        return f"size must be WxH, got {size!r}"
    width, height = int(match.group(1)), int(match.group(2))
    if width % 16 or height % 16:
        return f"size {size}: both sides must be divisible by 16"
    if not MIN_PIXELS <= width * height <= MAX_PIXELS:
        return f"size {size}: width x height must be between {MIN_PIXELS} and {MAX_PIXELS}"
    if max(width, height) > MAX_EDGE:
        return f"size {size}: the longest side must be at most {MAX_EDGE}"
    if max(width, height) > MAX_RATIO * min(width, height):
        return f"size {size}: the aspect ratio must be at most {MAX_RATIO}:1"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record(
    record_id: str, now: datetime, prompt_object: dict[str, Any], status: str, paths: list[str]
) -> dict[str, Any]:
    """An aiRecord shaped like the reference's example."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return {
        "uuid": record_id,
        "userId": "user-fake",
        "teamId": "team-fake",
        "teamUser": {
            "teamId": "team-fake",
            "userId": "user-fake",
            "userName": "Fake User",
            "userAvatar": None,
            "status": "ACTIVE",
            "role": "ADMIN",
            "creditLimit": 100000000,
            "usedCredit": 42000,
            "createdAt": "2025-01-01T00:00:00.000Z",
            "createdBy": "SYSTEM",
            "updatedAt": stamp,
            "updatedBy": "SYSTEM",
        },
        "model": "gpt-image-2",
        "type": "IMAGE_GENERATOR",
        "metadata": None,
        "rating": None,
        "feedback": None,
        "conversationId": None,
        "status": status,
        "createdAt": stamp,
        "aiRecordDetail": {"promptObject": prompt_object, "resultObject": paths, "responseObject": {}},
        "additionalData": None,
        "temporaryUrl": None,
    }


def _failure(kind: str, retry_after: float | None, body: dict[str, Any]) -> web.Response:
    if kind == "500":
        return web.json_response({"message": "Internal server error"}, status=500)
    if kind == "429":
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        return web.json_response({"message": "Too many requests, please slow down"}, status=429, headers=headers)
    if kind == "429-html":
        return _html(429)
    if kind == "401":
        return web.json_response({"message": "Invalid API Key"}, status=401)
    if kind == "503-html":
        return _html(503)
    if kind == "504":
        return _html(504)
    if kind == "200-failed":
        record = _record(str(uuid.uuid4()), datetime.now(UTC), body["promptObject"], "FAILED", [])
        record["aiRecordDetail"]["errorMessage"] = "The image could not be generated by the upstream model"
        return web.json_response({"aiRecord": record})
    if kind == "moderation":
        error = {
            "code": "moderation_blocked",
            "message": "Your request was rejected by the safety system. If you believe this is an error, contact us.",
            "type": "image_generation_user_error",
        }
        return web.json_response({"error": error}, status=400)
    if kind == "bad-json":
        return web.Response(body=b'{"aiRecord": {"uuid": "', content_type="application/json")
    if kind == "insufficient-credits":
        message = "Insufficient credits. Please upgrade your plan or buy more credits."
        return web.json_response({"errorCode": "INSUFFICIENT_CREDITS", "message": message}, status=400)
    raise AssertionError(f"unhandled failure kind {kind}")


def _html(status: int) -> web.Response:
    title, text = _HTML_PAGES[status]
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        f"<p>{text}</p>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=page, content_type="text/html")


def _s3_error(status: int) -> web.Response:
    code = {403: "SignatureDoesNotMatch", 404: "NoSuchKey"}.get(status, "InternalError")
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{code}</Message></Error>'
    return web.Response(status=status, text=xml, content_type="application/xml")


async def _serve_forever(args: argparse.Namespace) -> None:
    fake = FakeOneMin(api_key=args.key, latency=args.latency)
    fake.noisy = args.noisy
    await fake.start(args.host, args.port)
    print(f"ONEMIN_API_URL={fake.api_url}", flush=True)
    print(f"ONEMIN_ASSET_URL={fake.asset_url}", flush=True)
    print(f"ONEMIN_API_KEY={args.key}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.close()


def main() -> None:
    """Run the fake until interrupted."""
    parser = argparse.ArgumentParser(description="A fake 1min.ai GPT Image 2 service on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--key", default="test-key", help="the API key it accepts")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each generation answer")
    parser.add_argument("--noisy", action="store_true", help="incompressible images (large files)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
