"""Fitting generated images under Discord's per-file upload limit: re-encode, scale down, or fall back to a link.

All Pillow work runs in worker threads, never on the event loop. Candidates are encoded straight into files in
``workdir``: Pillow releases the GIL while it encodes into a real file but holds it while it encodes into a
``BytesIO`` (a 4K JPEG with ``optimize`` would freeze the event loop for over 100 ms), and no encoded bytes pile up
in memory either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from PIL import Image

from imaginebot.delivery.headers import image_header, webp_size
from imaginebot.delivery.images import DeliverableImage, SourceImage
from imaginebot.periods import discord_timestamp
from imaginebot.threads import gather_to_the_end, to_thread_to_the_end

log = logging.getLogger(__name__)

OutputFormat = Literal["png", "jpeg", "webp"]

# Quality search bounds (JPEG and WebP "quality"). Below 40 artefacts get ugly enough that a smaller image looks better.
QUALITY_MAX = 95
QUALITY_MIN = 40

# Images decoded at once, bot-wide (per event loop): a 3840x2160 RGBA decode is ~33 MB, plus a converted copy.
MAX_PARALLEL_FITS = 2

# Scaling stops here: a thumbnail smaller than this on its short side is worth less than a link to the original.
MIN_SCALED_SIDE = 256
# Aim a little under the limit when scaling, so the next attempt usually fits at once.
SCALE_MARGIN = 0.95
MAX_SCALE_STEPS = 8

_EXTENSIONS: dict[str, str] = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}
_PREFERRED_EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_FORMAT_NAMES: dict[str, str] = {"JPEG": "JPEG", "WEBP": "WebP"}
# What Pillow raises for a file that is missing, truncated, not an image or absurdly large.
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def fit_for_upload(
    images: Sequence[SourceImage],
    *,
    file_limit: int,
    workdir: Path,
    preferred_format: OutputFormat,
) -> list[DeliverableImage]:
    """Return one deliverable per source image, in the same order, each file at most ``file_limit`` bytes.

    An image whose file is at or under the limit is left as it is (same path). One over it is re-encoded as JPEG
    (WebP when the member asked for webp, or when the image has real transparency) at the highest quality between
    ``QUALITY_MIN`` and ``QUALITY_MAX`` that fits, keeping its size; if even ``QUALITY_MIN`` is too big it is scaled
    down (aspect ratio kept) until it fits. Only when that is impossible too, or when the image was not downloaded
    or cannot be read, it becomes a link to ``fallback_url`` with a note saying why and when the link expires.

    ``file_limit`` is the interaction's ``attachment_size_limit``. New files are written into ``workdir`` (created
    if missing), which the caller removes once the message is sent. Pillow runs in worker threads, at most
    ``MAX_PARALLEL_FITS`` images being re-encoded at once across the whole bot. A source held in memory (``data``)
    is checked on the event loop from its header alone and, left as it is, stays in memory (no file at all); if
    it must be re-encoded it is written into ``workdir`` first.
    """
    if file_limit <= 0:
        raise ValueError(f"file_limit must be positive, not {file_limit}")
    limiter = _fitting_limiter()

    async def fit(source: SourceImage) -> DeliverableImage:
        try:
            if source.data is not None:
                ready = _check_in_memory(source, file_limit)
                if ready is not None:
                    return ready
                source = await to_thread_to_the_end(_write_to_workdir, source, workdir)
            ready = await asyncio.to_thread(_check_as_is, source, file_limit, preferred_format)
            if ready is not None:
                return ready
            async with limiter:
                return await to_thread_to_the_end(_reencode_to_fit, source, file_limit, workdir, preferred_format)
        except Exception:
            # A link beats losing the image, whatever went wrong in the re-encoding.
            log.exception("could not fit image %d for upload; posting it as a link", source.index)
            return _as_link(source, "could not be prepared for upload", preferred_format)

    if len(images) == 1:  # the usual case: no task to create
        return [await fit(images[0])]
    # Not asyncio.gather: cancelled, it would return while another image's thread still writes into workdir.
    return await gather_to_the_end(*(fit(source) for source in images))


def describe_size(size_bytes: int) -> str:
    """Render a byte count the way Discord states its limits: ``10 MiB``, ``60 KiB``, ``100 bytes``."""
    if size_bytes >= 1024 * 1024:
        return f"{size_bytes / (1024 * 1024):.4g} MiB"
    if size_bytes >= 1024:
        return f"{size_bytes / 1024:.4g} KiB"
    return f"{size_bytes} bytes"


def _fitting_limiter() -> asyncio.Semaphore:
    # One semaphore per event loop: an asyncio.Semaphore must not be shared across loops (tests run several).
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = asyncio.Semaphore(MAX_PARALLEL_FITS)
    return limiter


def _check_in_memory(source: SourceImage, file_limit: int) -> DeliverableImage | None:
    """Deliver an in-memory ``source`` untouched, from its header; None when it must be fitted or the header is
    not one ``image_header`` knows (then Pillow decides, from a file)."""
    assert source.data is not None
    header = image_header(source.data)
    if header is None or len(source.data) > file_limit:
        return None
    image_format, width, height = header
    return _untouched(source, _EXTENSIONS[image_format], len(source.data), width, height)


def _write_to_workdir(source: SourceImage, workdir: Path) -> SourceImage:
    """The in-memory ``source`` as a file in ``workdir``, for Pillow; runs in a worker thread."""
    assert source.data is not None
    workdir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=workdir, prefix=f"imagine-source-{source.index + 1}-")
    with os.fdopen(handle, "wb") as file:
        file.write(source.data)
    return replace(source, path=Path(name), data=None)


def _check_as_is(source: SourceImage, file_limit: int, preferred_format: OutputFormat) -> DeliverableImage | None:
    """Deliver ``source`` untouched or as a link when it needs no re-encoding; ``None`` when it must be fitted."""
    if source.path is None:
        return _as_link(source, "could not be downloaded", preferred_format)
    try:
        # The file on disk is what gets uploaded, so its real size counts, not the size reported for it.
        actual_size = source.path.stat().st_size
        webp = _webp_size(source.path)
        if webp is not None:
            image_format, (width, height) = "WEBP", webp
        else:
            with Image.open(source.path) as image:  # reads the header only
                image_format, (width, height) = image.format, image.size
    except _READ_ERRORS as exc:
        log.warning("image %d is not a readable image (%s); posting it as a link", source.index, exc)
        return _as_link(source, "could not be read", preferred_format)
    if actual_size > file_limit:
        return None
    extension = _EXTENSIONS.get(image_format or "", _PREFERRED_EXTENSIONS[preferred_format])
    return _untouched(source, extension, actual_size, width, height)


def _untouched(source: SourceImage, extension: str, size: int, width: int, height: int) -> DeliverableImage:
    """``source`` attached as it is, from its file or from memory."""
    return DeliverableImage(
        index=source.index,
        path=source.path,
        filename=_filename(source.index, extension),
        size_bytes=size,
        link=None,
        link_expires_at=None,
        note=None,
        width=width,
        height=height,
        data=source.data,
    )


def _webp_size(path: Path) -> tuple[int, int] | None:
    """A WebP file's size from its RIFF header, or None if it is not a WebP file.

    Pillow's WebP plugin decodes far more than the header on open, holding the GIL for milliseconds per image,
    which stalls the event loop when hundreds of WebP results arrive at once.
    """
    with path.open("rb") as file:
        return webp_size(file.read(30))


@dataclass(frozen=True, slots=True)
class _SearchResult:
    quality: int | None  # highest quality that fits, None when even QUALITY_MIN does not
    size: int  # bytes of the kept file, or when nothing fits, of the QUALITY_MIN attempt


def _reencode_to_fit(
    source: SourceImage, file_limit: int, workdir: Path, preferred_format: OutputFormat
) -> DeliverableImage:
    """Re-encode (and if need be scale down) an image that is over ``file_limit``; runs in a worker thread."""
    assert source.path is not None  # _check_as_is turned path-less sources into links
    started = time.perf_counter()
    with Image.open(source.path) as opened:
        opened.load()
        keep_alpha = _has_transparency(opened)
        target = "WEBP" if preferred_format == "webp" or keep_alpha else "JPEG"
        pixels = _prepare_pixels(opened, keep_alpha=keep_alpha, target=target)
        icc_profile = opened.info.get("icc_profile")
    del opened  # frees the original decode when a converted copy is used
    original_width, original_height = pixels.size

    workdir.mkdir(parents=True, exist_ok=True)
    extension = _EXTENSIONS[target]
    handle, name = tempfile.mkstemp(dir=workdir, prefix=f"imagine-{source.index + 1}-", suffix=f".{extension}")
    os.close(handle)
    output = Path(name)
    candidate = output.with_name(output.name + ".part")
    try:
        width, height = original_width, original_height
        result = _search_quality(pixels, target, icc_profile, file_limit, candidate, output, highest_first=True)
        steps = 0
        while result.quality is None:
            scale = math.sqrt(file_limit / result.size) * SCALE_MARGIN
            width = int(width * scale)
            height = round(width * original_height / original_width)
            steps += 1
            if min(width, height) < MIN_SCALED_SIDE or steps > MAX_SCALE_STEPS:
                output.unlink(missing_ok=True)
                log.info(
                    "image %d cannot fit %d bytes even scaled down; posting it as a link", source.index, file_limit
                )
                return _as_link(
                    source, "too large to upload", preferred_format, width=original_width, height=original_height
                )
            # reducing_gap lets Pillow reduce() by an integer factor first: much faster for big steps, same look.
            scaled = pixels.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
            result = _search_quality(scaled, target, icc_profile, file_limit, candidate, output, highest_first=False)
            del scaled
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    finally:
        candidate.unlink(missing_ok=True)

    format_name = _FORMAT_NAMES[target]
    change = f"re-encoded as {format_name} (quality {result.quality})"
    if (width, height) != (original_width, original_height):
        change = f"scaled down to {width}x{height} and {change}"
    log.info(
        "image %d (%d bytes, limit %d): %s, now %d bytes, in %.2fs",
        source.index,
        source.size_bytes,
        file_limit,
        change,
        result.size,
        time.perf_counter() - started,
    )
    return DeliverableImage(
        index=source.index,
        path=output,
        filename=_filename(source.index, extension),
        size_bytes=result.size,
        link=None,
        link_expires_at=None,
        note=f"{change} to fit Discord's {describe_size(file_limit)} limit",
        width=width,
        height=height,
    )


def _search_quality(
    pixels: Image.Image,
    target: str,
    icc_profile: bytes | None,
    limit: int,
    candidate: Path,
    output: Path,
    *,
    highest_first: bool,
) -> _SearchResult:
    """Binary-search the highest quality whose encoding fits ``limit``, leaving that encoding at ``output``.

    At full size most images fit at ``QUALITY_MAX`` (one encode), so that is tried first; after scaling, the
    size was chosen to just fit at ``QUALITY_MIN``, so that is tried first instead.
    """
    sizes: dict[int, int] = {}

    def fits(quality: int) -> bool:
        options: dict[str, object] = {"quality": quality}
        if target == "JPEG":
            options["optimize"] = True  # ~12% smaller for the same quality
        if icc_profile:
            options["icc_profile"] = icc_profile
        with candidate.open("wb") as file:
            pixels.save(file, format=target, **options)
            sizes[quality] = file.tell()
        if sizes[quality] > limit:
            return False
        # Keep every fitting attempt on disk: the search only ever moves to higher fitting qualities.
        os.replace(candidate, output)
        return True

    if highest_first and fits(QUALITY_MAX):
        return _SearchResult(QUALITY_MAX, sizes[QUALITY_MAX])
    if not fits(QUALITY_MIN):
        return _SearchResult(None, sizes[QUALITY_MIN])
    if not highest_first and fits(QUALITY_MAX):
        return _SearchResult(QUALITY_MAX, sizes[QUALITY_MAX])
    # Invariant: `low` fits and is kept at `output`; `high` does not fit.
    low, high = QUALITY_MIN, QUALITY_MAX
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return _SearchResult(low, sizes[low])


def _has_transparency(image: Image.Image) -> bool:
    """Whether any pixel is at least partly transparent (an alpha channel that is all opaque does not count)."""
    if not image.has_transparency_data:
        return False
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else image.convert("RGBA").getchannel("A")
    low, _high = alpha.getextrema()
    return low < 255


def _prepare_pixels(image: Image.Image, *, keep_alpha: bool, target: str) -> Image.Image:
    """Convert to a mode the target encoder takes as is (RGBA only when the transparency is kept)."""
    if keep_alpha:
        return image if image.mode == "RGBA" else image.convert("RGBA")
    if image.mode == "RGB" or (target == "JPEG" and image.mode == "L"):
        return image
    return image.convert("RGB")


def _as_link(
    source: SourceImage,
    reason: str,
    preferred_format: OutputFormat,
    *,
    width: int | None = None,
    height: int | None = None,
) -> DeliverableImage:
    """Deliver ``source`` as its fallback link, with a note giving ``reason`` and when the link expires."""
    if source.fallback_url:
        note = f"{reason}: link above"
        if source.link_expires_at is not None:
            note += f" (expires {discord_timestamp(source.link_expires_at)})"
    else:
        note = f"{reason}, and no link to it is available"
    return DeliverableImage(
        index=source.index,
        path=None,
        filename=_filename(source.index, _PREFERRED_EXTENSIONS[preferred_format]),
        size_bytes=source.size_bytes,
        link=source.fallback_url,
        link_expires_at=source.link_expires_at if source.fallback_url else None,
        note=note,
        width=width,
        height=height,
    )


def _filename(index: int, extension: str) -> str:
    return f"imagine-{index + 1}.{extension}"
