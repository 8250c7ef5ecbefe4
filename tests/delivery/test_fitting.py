"""fit_for_upload: images under the limit stay as they are, bigger ones are re-encoded, scaled or become links."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile

from imaginebot.delivery import (
    MAX_PARALLEL_FITS,
    MIN_SCALED_SIDE,
    QUALITY_MAX,
    QUALITY_MIN,
    SourceImage,
    describe_size,
    fit_for_upload,
    fitting,
)

MiB = 1024 * 1024
EXPIRES = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
URL = "https://asset.example/images/1.png?X-Amz-Signature=abc"
QUALITY_NOTE = re.compile(r"re-encoded as (JPEG|WebP) \(quality (\d+)\) to fit Discord's (.+) limit$")


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels: incompressible, so PNGs are big and JPEG sizes grow steadily with quality."""
    channels = len(mode)
    return Image.frombytes(mode, (width, height), random.Random(seed).randbytes(width * height * channels))


def save_source(
    image: Image.Image, path: Path, index: int = 0, image_format: str = "PNG", **options: object
) -> SourceImage:
    """Write ``image`` like a downloaded result and describe it as the generator client would."""
    image.save(path, format=image_format, **options)
    return SourceImage(
        index=index, path=path, size_bytes=path.stat().st_size, fallback_url=URL, link_expires_at=EXPIRES
    )


def quality_from(note: str | None) -> tuple[str, int, str]:
    assert note is not None
    match = QUALITY_NOTE.search(note)
    assert match, note
    return match.group(1), int(match.group(2)), match.group(3)


def encoded_size(image: Image.Image, image_format: str, quality: int, tmp_path: Path) -> int:
    """Size of ``image`` encoded the way a fitted file is (JPEG with optimized Huffman tables)."""
    probe = tmp_path / f"probe.{image_format.lower()}"
    options: dict[str, object] = {"optimize": True} if image_format == "JPEG" else {}
    image.save(probe, format=image_format, quality=quality, **options)
    return probe.stat().st_size


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "out"  # does not exist yet: fit_for_upload creates it


async def test_image_under_the_limit_is_left_as_it_is(tmp_path: Path, workdir: Path) -> None:
    source = save_source(noise(1024, 1024), tmp_path / "a.png", index=2, compress_level=1)
    assert 2 * MiB < source.size_bytes < 10 * MiB

    [image] = await fit_for_upload([source], file_limit=10 * MiB, workdir=workdir, preferred_format="png")

    assert image.path == source.path
    assert image.is_upload
    assert (image.index, image.filename, image.size_bytes) == (2, "imagine-3.png", source.size_bytes)
    assert (image.width, image.height) == (1024, 1024)
    assert image.note is None and image.link is None and image.link_expires_at is None


@pytest.mark.parametrize(("image_format", "extension"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
async def test_an_image_in_memory_under_the_limit_stays_in_memory(
    tmp_path: Path, workdir: Path, image_format: str, extension: str
) -> None:
    on_disk = save_source(noise(320, 200), tmp_path / "small", index=1, image_format=image_format)
    data = on_disk.path.read_bytes()
    source = SourceImage(index=1, path=None, size_bytes=len(data), fallback_url=URL, link_expires_at=EXPIRES, data=data)

    [image] = await fit_for_upload([source], file_limit=1 * MiB, workdir=workdir, preferred_format="png")

    assert image.data == data and image.path is None and image.is_upload
    assert (image.filename, image.size_bytes, image.width, image.height) == (
        f"imagine-2.{extension}",
        len(data),
        320,
        200,
    )
    assert image.note is None and not workdir.exists()  # no file was written


async def test_an_image_in_memory_over_the_limit_is_re_encoded_from_a_file(tmp_path: Path, workdir: Path) -> None:
    on_disk = save_source(noise(1536, 1024), tmp_path / "big.png", compress_level=1)
    data = on_disk.path.read_bytes()
    source = SourceImage(index=0, path=None, size_bytes=len(data), fallback_url=URL, link_expires_at=EXPIRES, data=data)

    [image] = await fit_for_upload([source], file_limit=1 * MiB, workdir=workdir, preferred_format="png")

    assert image.data is None and image.path is not None and image.path.parent == workdir
    assert image.size_bytes <= 1 * MiB and image.note is not None and "re-encoded" in image.note


async def test_untouched_filename_follows_the_actual_format(tmp_path: Path, workdir: Path) -> None:
    # The generator may not honour the asked format: the attachment's extension must match the bytes.
    source = save_source(noise(320, 200), tmp_path / "result.bin", image_format="JPEG")

    [image] = await fit_for_upload([source], file_limit=10 * MiB, workdir=workdir, preferred_format="png")

    assert image.path == source.path
    assert image.filename == "imagine-1.jpg"


async def test_image_exactly_at_the_limit_is_left_as_it_is(tmp_path: Path, workdir: Path) -> None:
    source = save_source(noise(400, 300), tmp_path / "a.png")

    [image] = await fit_for_upload([source], file_limit=source.size_bytes, workdir=workdir, preferred_format="png")

    assert image.path == source.path and image.note is None


async def test_over_the_limit_becomes_jpeg_at_the_best_quality_that_fits(tmp_path: Path, workdir: Path) -> None:
    original = noise(1536, 1024)
    source = save_source(original, tmp_path / "a.png", compress_level=1)
    limit = 1 * MiB
    assert source.size_bytes > limit

    [image] = await fit_for_upload([source], file_limit=limit, workdir=workdir, preferred_format="png")

    assert image.path is not None and image.path != source.path
    assert image.path.parent == workdir
    assert image.filename == "imagine-1.jpg"
    assert image.size_bytes == image.path.stat().st_size <= limit
    with Image.open(image.path) as fitted:
        assert fitted.format == "JPEG"
        assert fitted.size == (1536, 1024) == (image.width, image.height)
    name, quality, limit_text = quality_from(image.note)
    assert (name, limit_text) == ("JPEG", "1 MiB")
    assert QUALITY_MIN < quality < QUALITY_MAX  # the limit was chosen so the search has to pick in between
    # The best quality: one step up would not have fit (a small tolerance for encoder settings).
    assert encoded_size(original, "JPEG", min(quality + 2, QUALITY_MAX), tmp_path) > limit
    assert abs(encoded_size(original, "JPEG", quality, tmp_path) - image.size_bytes) <= image.size_bytes // 50


async def test_jpeg_over_the_limit_is_re_encoded_as_jpeg(tmp_path: Path, workdir: Path) -> None:
    source = save_source(noise(1536, 1024), tmp_path / "a.jpg", image_format="JPEG", quality=100)
    limit = 1 * MiB
    assert source.size_bytes > limit

    [image] = await fit_for_upload([source], file_limit=limit, workdir=workdir, preferred_format="jpeg")

    assert image.path is not None and image.size_bytes <= limit
    assert image.filename == "imagine-1.jpg"
    assert quality_from(image.note)[0] == "JPEG"


async def test_webp_asked_gives_webp(tmp_path: Path, workdir: Path) -> None:
    original = noise(768, 768)
    source = save_source(original, tmp_path / "a.webp", image_format="WEBP", lossless=True)
    limit = 400 * 1024
    assert source.size_bytes > limit

    [image] = await fit_for_upload([source], file_limit=limit, workdir=workdir, preferred_format="webp")

    assert image.path is not None and image.filename == "imagine-1.webp"
    assert image.size_bytes == image.path.stat().st_size <= limit
    with Image.open(image.path) as fitted:
        assert fitted.format == "WEBP" and fitted.size == (768, 768)
    name, quality, limit_text = quality_from(image.note)
    assert (name, limit_text) == ("WebP", "400 KiB")
    assert QUALITY_MIN < quality < QUALITY_MAX
    assert encoded_size(original, "WEBP", min(quality + 2, QUALITY_MAX), tmp_path) > limit


async def test_transparency_is_kept_with_webp(tmp_path: Path, workdir: Path) -> None:
    picture = noise(768, 768)
    picture.putalpha(Image.linear_gradient("L").resize((768, 768)))  # transparent at the top, opaque at the bottom
    source = save_source(picture, tmp_path / "a.png", compress_level=1)
    limit = 400 * 1024
    assert source.size_bytes > limit

    [image] = await fit_for_upload([source], file_limit=limit, workdir=workdir, preferred_format="png")

    assert image.path is not None and image.size_bytes <= limit
    assert image.filename == "imagine-1.webp"
    with Image.open(image.path) as fitted:
        assert fitted.format == "WEBP" and fitted.mode == "RGBA"
        top, bottom = fitted.getpixel((384, 0)), fitted.getpixel((384, 767))
    assert top[3] < 16 and bottom[3] > 239


async def test_an_opaque_alpha_channel_does_not_force_webp(tmp_path: Path, workdir: Path) -> None:
    source = save_source(noise(1024, 1024).convert("RGBA"), tmp_path / "a.png")  # alpha 255 everywhere
    with Image.open(tmp_path / "a.png") as stored:
        assert stored.mode == "RGBA"

    [image] = await fit_for_upload([source], file_limit=1 * MiB, workdir=workdir, preferred_format="png")

    assert image.filename == "imagine-1.jpg"


async def test_scaled_down_when_the_lowest_quality_is_still_too_big(tmp_path: Path, workdir: Path) -> None:
    original = noise(2048, 2048)
    source = save_source(original, tmp_path / "a.png", compress_level=1)
    limit = 60 * 1024
    assert encoded_size(original, "JPEG", QUALITY_MIN, tmp_path) > limit

    [image] = await fit_for_upload([source], file_limit=limit, workdir=workdir, preferred_format="png")

    assert image.path is not None and image.size_bytes == image.path.stat().st_size <= limit
    assert image.width is not None and image.height is not None
    with Image.open(image.path) as fitted:
        assert fitted.size == (image.width, image.height)
    assert MIN_SCALED_SIDE <= image.width < 2048
    assert abs(image.width - image.height) <= 1
    assert image.note is not None
    assert image.note.startswith(f"scaled down to {image.width}x{image.height} and re-encoded as JPEG (quality ")
    # Not scaled needlessly far: the result uses a good part of the allowance.
    assert image.size_bytes > limit // 2


async def test_scaling_keeps_the_aspect_ratio(tmp_path: Path, workdir: Path) -> None:
    source = save_source(noise(2048, 1152), tmp_path / "a.png", compress_level=1)

    [image] = await fit_for_upload([source], file_limit=50 * 1024, workdir=workdir, preferred_format="jpeg")

    assert image.path is not None and image.width is not None and image.height is not None
    assert image.width < 2048
    assert image.width / image.height == pytest.approx(2048 / 1152, rel=0.01)


async def test_impossible_to_fit_becomes_a_link_with_a_note(tmp_path: Path, workdir: Path) -> None:
    source = save_source(noise(640, 480), tmp_path / "a.png")

    [image] = await fit_for_upload([source], file_limit=100, workdir=workdir, preferred_format="png")

    assert image.path is None and not image.is_upload
    assert image.link == URL and image.link_expires_at == EXPIRES
    assert image.note == f"too large to upload: link above (expires <t:{int(EXPIRES.timestamp())}:R>)"
    assert (image.width, image.height) == (640, 480)
    assert list(workdir.iterdir()) == []  # no abandoned attempts


async def test_failed_download_becomes_a_link(workdir: Path) -> None:
    expires = datetime.now(UTC) + timedelta(days=7)
    sources = [
        SourceImage(index=0, path=None, size_bytes=0, fallback_url=URL, link_expires_at=expires),
        SourceImage(index=1, path=None, size_bytes=0, fallback_url=URL, link_expires_at=None),
        SourceImage(index=2, path=None, size_bytes=0, fallback_url=None, link_expires_at=None),
    ]

    with_expiry, without_expiry, nothing = await fit_for_upload(
        sources, file_limit=10 * MiB, workdir=workdir, preferred_format="jpeg"
    )

    assert with_expiry.path is None and with_expiry.link == URL and with_expiry.link_expires_at == expires
    assert with_expiry.note == f"could not be downloaded: link above (expires <t:{int(expires.timestamp())}:R>)"
    assert without_expiry.note == "could not be downloaded: link above"
    assert nothing.path is None and nothing.link is None
    assert nothing.note == "could not be downloaded, and no link to it is available"
    assert with_expiry.filename == "imagine-1.jpg"


async def test_unreadable_file_becomes_a_link(tmp_path: Path, workdir: Path) -> None:
    page = tmp_path / "a.png"
    page.write_bytes(b"<html>503 Service Unavailable</html>")
    gone = tmp_path / "missing.png"
    sources = [
        SourceImage(index=0, path=page, size_bytes=36, fallback_url=URL, link_expires_at=None),
        SourceImage(index=1, path=gone, size_bytes=36, fallback_url=URL, link_expires_at=None),
    ]

    images = await fit_for_upload(sources, file_limit=10 * MiB, workdir=workdir, preferred_format="png")

    assert [(image.path, image.link, image.note) for image in images] == [
        (None, URL, "could not be read: link above"),
        (None, URL, "could not be read: link above"),
    ]


async def test_an_unexpected_failure_still_delivers_a_link(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(fitting, "_reencode_to_fit", broken)
    source = save_source(noise(640, 480), tmp_path / "a.png")

    [image] = await fit_for_upload([source], file_limit=1000, workdir=workdir, preferred_format="png")

    assert image.path is None and image.link == URL
    assert image.note is not None and image.note.startswith("could not be prepared for upload: link above")


async def test_mixed_batch_keeps_order_and_bounds_parallel_work(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = [save_source(noise(512, 512, seed=i), tmp_path / f"{i}.png", index=i) for i in range(5)]
    sources.insert(2, SourceImage(index=5, path=None, size_bytes=0, fallback_url=URL, link_expires_at=None))
    running = peak = 0
    lock = threading.Lock()
    original = fitting._reencode_to_fit

    def counting(*args: object) -> object:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)  # long enough for every allowed worker to overlap
            return original(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(fitting, "_reencode_to_fit", counting)

    images = await fit_for_upload(sources, file_limit=200 * 1024, workdir=workdir, preferred_format="png")

    assert [image.index for image in images] == [0, 1, 5, 2, 3, 4]
    assert peak == MAX_PARALLEL_FITS
    assert all(image.size_bytes <= 200 * 1024 for image in images if image.is_upload)
    assert len({image.path for image in images if image.is_upload}) == 5
    assert sorted(path.suffix for path in workdir.iterdir()) == [".jpg"] * 5  # no leftover attempts


async def test_limit_must_be_positive(workdir: Path) -> None:
    with pytest.raises(ValueError):
        await fit_for_upload([], file_limit=0, workdir=workdir, preferred_format="png")


async def max_tick_gap_during(work: object, tick: float = 0.01) -> tuple[float, int]:
    """Run ``work`` (an awaitable) while a task ticks every ``tick`` seconds; return the longest gap and tick count."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(tick)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(tick * 3)  # let the ticker settle first
    try:
        await work  # type: ignore[misc]
    finally:
        done.set()
        await task
    return max(gaps), len(gaps)


async def test_the_gap_measurement_sees_a_blocked_loop() -> None:
    # Control for the next test: the harness does report a loop that is blocked.
    async def blocking() -> None:
        time.sleep(0.3)  # noqa: ASYNC251 - blocking on purpose

    gap, _ticks = await max_tick_gap_during(blocking())

    assert gap > 0.25


async def test_re_encoding_never_blocks_the_event_loop(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = noise(3840, 2160)
    source = save_source(original, tmp_path / "4k.png", compress_level=1)
    limit = 5 * MiB  # forces a full quality search over a 4K image: several encodes of 100 ms+ each
    assert encoded_size(original, "JPEG", QUALITY_MAX, tmp_path) > limit
    del original

    loop_thread = threading.get_ident()
    calls_on_loop: list[str] = []
    pillow_calls: list[str] = []

    def watch(owner: object, name: str) -> None:
        wrapped = getattr(owner, name)

        def watched(*args: object, **kwargs: object) -> object:
            pillow_calls.append(name)
            if threading.get_ident() == loop_thread:
                calls_on_loop.append(name)
            return wrapped(*args, **kwargs)

        monkeypatch.setattr(owner, name, watched)

    watch(Image, "open")
    watch(ImageFile.ImageFile, "load")
    watch(Image.Image, "save")
    watch(Image.Image, "convert")
    watch(Image.Image, "resize")

    started = time.perf_counter()
    fitted = fit_for_upload([source], file_limit=limit, workdir=workdir, preferred_format="png")
    gap, ticks = await max_tick_gap_during(fitted)
    elapsed = time.perf_counter() - started

    assert calls_on_loop == []
    assert pillow_calls.count("save") >= 4  # it really searched, while the loop was being watched
    # A healthy loop ticks every ~10-15 ms here, even with every CPU busy. Encoding into a BytesIO instead of a file
    # (Pillow then holds the GIL) shows up as ~140 ms gaps and a ~50 ms average tick, so both bounds stay below that.
    assert gap < 0.1, f"event loop blocked for {gap * 1000:.0f} ms"
    assert elapsed / ticks < 0.03, f"event loop starved: {ticks} ticks in {elapsed:.2f} s"


def test_describe_size() -> None:
    assert describe_size(10 * MiB) == "10 MiB"
    assert describe_size(25 * MiB) == "25 MiB"
    assert describe_size(MiB + MiB // 2) == "1.5 MiB"
    assert describe_size(60 * 1024) == "60 KiB"
    assert describe_size(100) == "100 bytes"


async def test_a_fit_cancelled_mid_decode_leaves_nothing_after_the_jobs_cleanup(tmp_path: Path, workdir: Path) -> None:
    """A stopping bot cancels the job; the job then removes its work folder. The re-encoding thread cannot be
    stopped, so the cancelled fit waits for it: otherwise it would create the folder again, with its output."""
    source = save_source(noise(3072, 3072, seed=3), tmp_path / "big.png", compress_level=1)
    fitting_task = asyncio.create_task(
        fit_for_upload([source], file_limit=1 * MiB, workdir=workdir, preferred_format="png")
    )
    await asyncio.sleep(0.05)  # decoding, before the thread creates the work folder
    fitting_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fitting_task
    if workdir.exists():  # what JobService._run's cleanup does
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()
    await asyncio.get_running_loop().shutdown_default_executor()  # every worker thread has ended
    assert not workdir.exists()


async def test_a_cancelled_fit_of_two_images_ends_only_when_both_threads_have(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two images re-encoded side by side, one much quicker, and the fitting cancelled (twice: asyncio.gather's
    caller may): it ends only once both threads have, so none writes into the work folder after the job removed it.
    asyncio.gather would end as soon as the quick image's thread did."""
    loop = asyncio.get_running_loop()
    started = asyncio.Semaphore(0)
    running = 0
    reencode = fitting._reencode_to_fit

    def counted(*args: Any) -> Any:
        nonlocal running
        running += 1  # (each runs on a worker thread; += on an int under the GIL is enough for two of them)
        loop.call_soon_threadsafe(started.release)
        try:
            return reencode(*args)
        finally:
            running -= 1

    monkeypatch.setattr(fitting, "_reencode_to_fit", counted)
    sources = [
        save_source(noise(side, side, seed=index), tmp_path / f"big{index}.png", compress_level=1, index=index)
        for index, side in enumerate((1024, 3072))
    ]
    fitting_task = asyncio.create_task(
        fit_for_upload(sources, file_limit=1 * MiB, workdir=workdir, preferred_format="png")
    )
    for _ in sources:
        await started.acquire()
    fitting_task.cancel()
    await asyncio.sleep(0.01)
    fitting_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fitting_task
    assert running == 0, "the fitting ended while a re-encoding thread still wrote into the work folder"
