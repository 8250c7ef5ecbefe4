"""Image headers read without Pillow agree with Pillow, and anything else is left to Pillow."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imaginebot.delivery.headers import image_header


def encoded(image_format: str, size: tuple[int, int], mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 90, 128)[: len(mode)]).save(out, image_format, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("image_format", "mode", "size", "options"),
    [
        ("PNG", "RGB", (1536, 1024), {}),
        ("PNG", "RGBA", (1, 3000), {}),
        ("JPEG", "RGB", (1024, 1536), {}),
        ("JPEG", "RGB", (992, 1008), {"progressive": True, "optimize": True}),
        ("JPEG", "L", (2048, 1152), {"exif": b"Exif\x00\x00" + b"\x00" * 64}),
        ("WEBP", "RGB", (1536, 1024), {"quality": 80}),
        ("WEBP", "RGBA", (1024, 1536), {"lossless": True}),
    ],
)
def test_header_gives_what_pillow_sees(
    image_format: str, mode: str, size: tuple[int, int], options: dict[str, object]
) -> None:
    data = encoded(image_format, size, mode, **options)
    with Image.open(io.BytesIO(data)) as image:
        assert image_header(data) == (image.format, *image.size) == (image_format, *size)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a" + b"\x00" * 40,
        b"\x89PNG\r\n\x1a\n\x00\x00",  # cut short
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # a JPEG cut before its frame header
        b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 20,  # a scan before any frame header
        b"RIFF\x00\x00\x00\x00WEBPVP8Z" + b"\x00" * 20,
    ],
)
def test_anything_else_is_left_to_pillow(data: bytes) -> None:
    assert image_header(data) is None


def test_a_gif_is_left_to_pillow() -> None:
    assert image_header(encoded("GIF", (10, 10), "L")) is None
