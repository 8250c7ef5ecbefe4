"""A WebP result's size is read from its RIFF header (Pillow's WebP open is slow enough to stall the loop)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from imaginebot.delivery.fitting import _webp_size


@pytest.mark.parametrize(
    ("mode", "lossless", "size"),
    [
        ("RGB", False, (1536, 1024)),
        ("RGBA", False, (1024, 1536)),
        ("RGB", True, (2048, 1152)),
        ("RGBA", True, (992, 1008)),
    ],
)
def test_webp_header_gives_the_size_pillow_sees(
    tmp_path: Path, mode: str, lossless: bool, size: tuple[int, int]
) -> None:
    path = tmp_path / "image.webp"
    Image.new(mode, size, (10, 200, 30, 128)[: len(mode)]).save(path, "WEBP", lossless=lossless, quality=80)
    assert _webp_size(path) == size


def test_other_formats_are_left_to_pillow(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    Image.new("RGB", (64, 32)).save(path, "PNG")
    assert _webp_size(path) is None
