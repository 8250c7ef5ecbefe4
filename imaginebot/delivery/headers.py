"""An image's format and size from the first bytes of its file: PNG, JPEG and WebP, without Pillow.

Pillow's ``Image.open`` reads headers in Python and, for WebP, decodes far more than the header, holding the
GIL for a millisecond or more per image. Reading the few bytes these formats need is cheap enough to run on
the event loop for an image already in memory. Anything not recognised here is left to Pillow.
"""

from __future__ import annotations

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (SOF0-SOF15 except DHT, JPG and DAC), which carry the frame's size.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})

ImageHeader = tuple[str, int, int]  # Pillow's format name ("PNG", "JPEG", "WEBP"), width, height


def image_header(data: bytes) -> ImageHeader | None:
    """``(format, width, height)`` of a PNG, JPEG or WebP image from its bytes; None if not one of them (or cut
    short before its size)."""
    if data.startswith(_PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    webp = webp_size(data)
    return ("WEBP", *webp) if webp is not None else None


def webp_size(head: bytes) -> tuple[int, int] | None:
    """A WebP image's size from its RIFF header (the first 30 bytes), or None if it is not a WebP image."""
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L":
        b0, b1, b2, b3 = head[21:25]
        return 1 + (((b1 & 0x3F) << 8) | b0), 1 + (((b3 & 0x0F) << 10) | (b2 << 2) | ((b1 & 0xC0) >> 6))
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    return None


def _png(data: bytes) -> ImageHeader | None:
    # The signature, then the IHDR chunk: length (4), type (4), width (4), height (4).
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return ("PNG", width, height) if width and height else None


def _jpeg(data: bytes) -> ImageHeader | None:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or the scan started before any frame header
            return None
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in _JPEG_FRAMES:
            frame = data[position + 4 : position + 9]  # precision, height (2), width (2)
            if len(frame) < 5:
                return None
            height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
            return ("JPEG", width, height) if width and height else None
        if length < 2:
            return None
        position += 2 + length
    return None
