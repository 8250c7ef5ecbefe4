"""The client that asks 1min.ai for GPT Image 2 generations and fetches the resulting images."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from imaginebot.generator.errors import (
    GeneratorError,
    GeneratorTimeout,
    ServerError,
    error_from_response,
)
from imaginebot.generator.slots import DownloadSlots
from imaginebot.generator.types import DownloadedImage, GenerationRequest, GenerationResult, MalformedResult
from imaginebot.threads import gather_to_the_end, to_thread_to_the_end

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
# Bytes gathered in memory before one write to disk: bounds memory per image while keeping thread hops few.
_FLUSH_AT = 256 * 1024
# aiohttp's read buffer for a download (it stops reading the socket at twice this): small, because a download that
# has its answer may wait for a slot with that much of its body in memory (see slots). 64 KiB, aiohttp's default,
# peaked at 214-276 MB in bench.burst --oversize --download-latency 0.2 at 500 members; 16 KiB at 184-204 MB.
_DOWNLOAD_BUFFER = 16 * 1024
# The largest body taken as an image. GPT Image 2's largest, 3840x2160, is at most ~33 MB even as an incompressible
# RGBA PNG; a server sending more (or without end) is broken, and must not fill the disk.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
_IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp"}
_BINARY_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})


class _RetryableFetchError(Exception):
    """A download failure worth another attempt (connection trouble, 5xx, truncated body)."""


class _FinalFetchError(Exception):
    """A download failure that another attempt at the same URL will not fix (404, 403, not an image)."""


class GeneratorClient:
    """Talks to 1min.ai over the bot's shared aiohttp session, which it never closes.

    ``generate`` sends exactly one POST per call and never retries it (a POST may be billed even when it looked
    failed); ``download`` fetches every image of a result to temporary files, retrying only the fetches.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        api_url: str = "https://api.1min.ai",
        asset_url: str = "https://asset.1min.ai",
        connect_timeout: float = 10,
        read_timeout: float = 600,
        download_timeout: float = 120,
        download_attempts: int = 3,
        spool_dir: Path | None = None,
        download_backoff: float = 0.5,
        download_slots: int = 16,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._session = session
        self._api_key = api_key
        self._api_url = api_url.rstrip("/")
        self._asset_url = asset_url.rstrip("/")
        self._generate_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        # A download's deadline is kept by _fetch in two parts (until the headers, then the body once it has a
        # slot), so that waiting for a slot never counts against it; aiohttp only watches a silent peer.
        self._download_deadline = download_timeout
        self._download_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=download_timeout
        )
        self._read_timeout = read_timeout
        self._download_attempts = max(1, download_attempts)
        self._download_backoff = download_backoff
        self._spool_dir = spool_dir
        self._closed = False
        # Downloads at work at once, bot-wide; one kept waiting by a slow server does not hold a slot (see slots).
        self._download_slots = DownloadSlots(download_slots)
        # Built once: parsing the URL and the headers again for every request costs the event loop in a burst.
        self._generate_url = URL(self.generate_url)
        self._headers = {"API-KEY": self._api_key, "Content-Type": "application/json", "Accept": "application/json"}

    def __repr__(self) -> str:
        # Deliberately without the key.
        return f"GeneratorClient(api_url={self._api_url!r}, asset_url={self._asset_url!r})"

    @property
    def generate_url(self) -> str:
        """Where generations are POSTed."""
        return f"{self._api_url}/api/features"

    @property
    def asset_url(self) -> str:
        """The base that asset paths are joined to."""
        return self._asset_url

    async def __aenter__(self) -> GeneratorClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop accepting work. The session belongs to the bot and stays open."""
        self._closed = True

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Send one generation request and return where its images are.

        Raises a GeneratorError subclass on any failure; RateLimited means the request was not taken and may be
        sent again after ``retry_after``. Nothing is retried here.
        """
        if self._closed:
            raise RuntimeError("the generator client is closed")
        body = json.dumps(request.to_payload(), ensure_ascii=False).encode("utf-8")
        headers = self._headers
        log.debug(
            "generation request: size=%s quality=%s n=%d format=%s (prompt of %d characters)",
            request.size,
            request.quality,
            request.count,
            request.output_format,
            len(request.prompt),
        )
        started = time.monotonic()
        try:
            # No redirects: following one would hand the API-KEY header to another host.
            async with self._session.post(
                self._generate_url, data=body, headers=headers, timeout=self._generate_timeout, allow_redirects=False
            ) as response:
                raw = await response.read()
                status = response.status
                content_type = response.headers.get("Content-Type")
                response_headers = response.headers
        except TimeoutError as exc:
            elapsed = time.monotonic() - started
            raise self._clean(
                GeneratorTimeout(f"no answer from the generator after {elapsed:.1f} s ({type(exc).__name__})")
            ) from exc
        except aiohttp.ClientError as exc:
            raise self._clean(ServerError(f"could not reach the generator: {type(exc).__name__}: {exc}")) from exc
        elapsed = time.monotonic() - started

        error = error_from_response(status, content_type, raw, response_headers)
        if error is not None:
            self._clean(error)
            log.warning("generation failed after %.1f s: %s: %s", elapsed, type(error).__name__, error.detail)
            raise error
        try:
            result = GenerationResult.from_json(json.loads(raw), elapsed=elapsed)
        except (ValueError, MalformedResult) as exc:  # error_from_response accepted it, so this is a bug guard
            raise self._clean(ServerError(f"unreadable generation result: {exc}", status=status)) from exc
        if result.image_count != request.count:
            log.warning(
                "generation %s returned %d image(s) for n=%d", result.record_id, result.image_count, request.count
            )
        if len(result.asset_paths) > request.count:  # more than asked for: the ones asked for are posted
            result = dataclasses.replace(result, asset_paths=result.asset_paths[: request.count])
        log.debug(  # the job logs one line with these figures once its images are delivered
            "generation %s: %d image(s) in %.1f s, reported credit %s",
            result.record_id,
            result.image_count,
            elapsed,
            result.reported_credits,
        )
        return result

    def image_sources(self, result: GenerationResult) -> list[list[str]]:
        """For each image of ``result``, the URLs to try in order (presigned first for image 0)."""
        sources = [[self.asset_link(path)] for path in result.asset_paths]
        if result.temporary_url:
            if sources:
                sources[0].insert(0, result.temporary_url)
            else:
                sources.append([result.temporary_url])
        return sources

    def asset_link(self, path: str) -> str:
        """The asset host's URL for one resultObject path (a storage key: spaces, "?", "#", "%" or any letter
        in it are percent-encoded, so that the URL names that key)."""
        return f"{self._asset_url}/{quote(path.lstrip('/'), safe='/')}"

    async def download(self, result: GenerationResult, *, in_memory: int = 0) -> list[DownloadedImage]:
        """Fetch every image of ``result`` to a temporary file, concurrently, in index order.

        Up to ``in_memory`` bytes of the result may be kept in memory instead (``data``; an equal share per
        image, each at most 256 KiB): a small image then needs no file at all. An image that cannot be fetched
        after the retries comes back with ``path=None`` and ``error`` set, and a ``source_url`` worth posting as
        a link, rather than raising.
        """
        sources = self.image_sources(result)
        keep = min(_FLUSH_AT, in_memory // len(sources)) if sources else 0
        if len(sources) == 1:  # the usual case: no task to create and schedule, one turn of the loop fewer
            images = [await self._download_image(0, sources[0], result, keep)]
        else:
            fetching = [
                asyncio.ensure_future(self._download_image(i, urls, result, keep)) for i, urls in enumerate(sources)
            ]
            try:
                # Raises only once every download has ended, however often it is cancelled.
                images = await gather_to_the_end(*fetching)
            except BaseException:
                # Cancelled (the bot is stopping): the images already fetched are files nobody else knows of.
                done = [task.result() for task in fetching if _succeeded(task)]
                paths = [image.path for image in done if image.path]
                await asyncio.shield(asyncio.to_thread(_unlink_all, paths))
                raise
        failed = [image for image in images if not image.ok]
        if failed:
            log.warning(
                "generation %s: %d of %d image(s) could not be downloaded: %s",
                result.record_id,
                len(failed),
                len(images),
                "; ".join(f"#{image.index}: {image.error}" for image in failed),
            )
        return list(images)

    async def _download_image(
        self, index: int, urls: list[str], result: GenerationResult, keep: int
    ) -> DownloadedImage:
        errors: list[str] = []
        for url in urls:
            image, error = await self._fetch_with_retries(index, url, result.record_id, keep)
            if image is not None:
                return image
            errors.append(f"{_where(url)}: {error}")
        # A presigned link is the likelier of the two to open for a member, so it is the one offered.
        return DownloadedImage(
            index=index,
            path=None,
            size_bytes=0,
            content_type=None,
            source_url=urls[0],
            link_expires_at=presigned_expiry(urls[0]),
            error="; ".join(errors),
        )

    async def _fetch_with_retries(
        self, index: int, url: str, record_id: str | None, keep: int
    ) -> tuple[DownloadedImage | None, str]:
        error = "not attempted"
        for attempt in range(1, self._download_attempts + 1):
            try:
                return await self._fetch(index, url, record_id, keep), ""
            except _FinalFetchError as exc:
                return None, str(exc)
            except _RetryableFetchError as exc:
                error = str(exc)
            log.debug("generation %s image %d: attempt %d failed (%s)", record_id, index, attempt, error)
            if attempt < self._download_attempts:
                await asyncio.sleep(self._download_backoff * 2 ** (attempt - 1))
        return None, f"{error} (after {self._download_attempts} attempts)"

    async def _fetch(self, index: int, url: str, record_id: str | None, keep: int) -> DownloadedImage:
        try:
            # encoded=True keeps a presigned URL's query byte for byte; re-encoding would break its signature.
            async with self._download_slots.hold() as slot:
                async with asyncio.timeout(self._download_deadline):
                    request = self._session.get(
                        URL(url, encoded=True), timeout=self._download_timeout, read_bufsize=_DOWNLOAD_BUFFER
                    )
                    response = await slot.answer(request)
                async with response:
                    status = response.status
                    if status >= 500 or status in (408, 429):
                        raise _RetryableFetchError(f"HTTP {status}")
                    if status != 200:
                        raise _FinalFetchError(f"HTTP {status}")
                    content_type = response.content_type if "Content-Type" in response.headers else None
                    # Storage servers mislabel images (text/plain, application/x-png): another label is believed
                    # only if the body does not start like an image (a login page served with 200, say).
                    labelled = not content_type or content_type.startswith("image/") or content_type in _BINARY_TYPES
                    expected = response.content_length
                    if expected is not None and expected > MAX_IMAGE_BYTES:
                        raise _FinalFetchError(f"{expected} bytes announced, more than any image ({MAX_IMAGE_BYTES})")
                    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                        expected = None  # it counts the compressed bytes; the body is read decompressed
                    suffix = _IMAGE_SUFFIXES.get(content_type or "") or _suffix_of(url)
                    await slot.take_for_body()  # given back while the server was slow: again, before new downloads
                    async with asyncio.timeout(self._download_deadline):
                        path, data, size = await self._spool(
                            response,
                            suffix,
                            f"imagine-{_safe(record_id)}-{index}-",
                            keep,
                            sniff_as=None if labelled else content_type,
                        )
        except TimeoutError as exc:
            raise _RetryableFetchError(f"timed out ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise _RetryableFetchError(f"{type(exc).__name__}: {exc}") from exc
        if size == 0 or (expected is not None and size != expected):
            if path is not None:
                await asyncio.to_thread(_unlink, path)
            raise _RetryableFetchError(f"got {size} bytes, expected {expected if expected is not None else 'some'}")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("generation %s image %d: %d bytes from %s", record_id, index, size, _where(url))
        return DownloadedImage(
            index=index,
            path=path,
            size_bytes=size,
            content_type=content_type,
            source_url=url,
            link_expires_at=presigned_expiry(url),
            error=None,
            data=data,
        )

    async def _spool(
        self,
        response: aiohttp.ClientResponse,
        suffix: str,
        prefix: str,
        keep: int,
        *,
        sniff_as: str | None = None,
    ) -> tuple[Path | None, bytes | None, int]:
        """Read the body: kept in memory if it is at most ``keep`` bytes, else streamed to a new temporary file
        (removed again if anything goes wrong). Returns (path, data, size), one of path and data set.

        The file is created with its first write, so an image under ``_FLUSH_AT`` costs one trip to a thread.
        With ``sniff_as`` (a Content-Type that does not say image), a body that does not start like an image is
        refused as soon as its first bytes are in.
        """
        spool = _Spool(self._spool_dir, prefix, suffix)
        size = 0
        buffer = bytearray()
        try:
            async for chunk in response.content.iter_chunked(_CHUNK):
                buffer += chunk
                size += len(chunk)
                if sniff_as is not None and size >= _SIGNATURE_BYTES:
                    if not _looks_like_image(bytes(buffer[:_SIGNATURE_BYTES])):
                        raise _FinalFetchError(f"not an image (Content-Type {sniff_as})")
                    sniff_as = None
                if size > MAX_IMAGE_BYTES:  # no image is this large: a broken server must not fill the disk
                    raise _FinalFetchError(f"more than {MAX_IMAGE_BYTES} bytes, more than any image")
                if len(buffer) >= _FLUSH_AT:
                    # To the end even if cancelled: discard() below must come after the file exists.
                    await to_thread_to_the_end(spool.write, bytes(buffer))
                    buffer.clear()
            if sniff_as is not None:  # fewer bytes than any image's signature
                raise _FinalFetchError(f"not an image (Content-Type {sniff_as})")
            if size <= keep and len(buffer) == size:  # small enough, and nothing went to the file
                return None, bytes(buffer), size
            path = await to_thread_to_the_end(spool.finish, bytes(buffer))
        except BaseException as exc:
            await asyncio.shield(asyncio.to_thread(spool.discard))
            if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
                raise _FinalFetchError(f"could not write the image to disk: {exc}") from exc
            raise
        return path, None, size

    def _clean(self, error: GeneratorError) -> GeneratorError:
        error.redact(self._api_key)
        return error


# The two query parameters that date a presigned S3 URL, as S3 writes them (digits need no percent-encoding).
_SIGNED_AT = re.compile(r"[?&]X-Amz-Date=([0-9]{8}T[0-9]{6}Z)(?=&|#|$)")
_LIFETIME = re.compile(r"[?&]X-Amz-Expires=([0-9]{1,9})(?=&|#|$)")


def presigned_expiry(url: str) -> datetime | None:
    """When a presigned S3 URL stops working (X-Amz-Date + X-Amz-Expires), or None for other URLs.

    Two searches rather than parsing the whole query: this runs for every downloaded image.
    """
    signed_at, lifetime = _SIGNED_AT.search(url), _LIFETIME.search(url)
    if signed_at is None or lifetime is None:
        return None
    stamp = signed_at.group(1)
    try:
        start = datetime(
            int(stamp[0:4]),
            int(stamp[4:6]),
            int(stamp[6:8]),
            int(stamp[9:11]),
            int(stamp[11:13]),
            int(stamp[13:15]),
            tzinfo=UTC,
        )
        return start + timedelta(seconds=int(lifetime.group(1)))
    except (ValueError, OverflowError):
        return None


def _where(url: str) -> str:
    """A URL without its query, for logs and error text (a presigned query is a credential to the image)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _safe(record_id: str | None) -> str:
    # The id comes from the server and ends up in a file name.
    return re.sub(r"[^A-Za-z0-9-]", "", record_id or "")[:40] or "x"


# The first bytes of the formats the generator makes (and GIF): PNG, JPEG, WebP (RIFF....WEBP).
_SIGNATURE_BYTES = 12


def _looks_like_image(head: bytes) -> bool:
    return head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    )


def _suffix_of(url: str) -> str:
    suffix = Path(urlsplit(url).path).suffix.lower()
    return suffix if suffix in {".png", ".jpg", ".jpeg", ".webp"} else ".img"


class _Spool:
    """A temporary file written from a thread: created on the first write, closed by ``finish``."""

    def __init__(self, directory: Path | None, prefix: str, suffix: str) -> None:
        self._directory, self._prefix, self._suffix = directory, prefix, suffix
        self._path: Path | None = None
        self._handle: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        """Append ``data``, creating the file first if needed."""
        if self._handle is None:
            if self._directory is not None:
                self._directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=self._prefix, suffix=self._suffix, dir=self._directory)
            self._path, self._handle = Path(name), os.fdopen(fd, "wb")
        self._handle.write(data)

    def finish(self, data: bytes) -> Path:
        """Append the last bytes, close the file and return its path."""
        self.write(data)
        assert self._handle is not None and self._path is not None
        self._handle.close()
        return self._path

    def discard(self) -> None:
        """Close and remove the file, if it was created."""
        try:
            if self._handle is not None:
                self._handle.close()
        finally:
            if self._path is not None:
                _unlink(self._path)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _succeeded(task: asyncio.Future[object]) -> bool:
    """Whether ``task`` ended with a result (its error, if any, is retrieved: it is not logged as never seen)."""
    return not task.cancelled() and task.exception() is None


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
