"""Grouping files into messages that Discord accepts: at most 10 files and about 25 MiB per request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from imaginebot.delivery.images import DeliverableImage

log = logging.getLogger(__name__)

# Discord refuses a whole request above this (HTTP 413, code 40005), even when every file fits on its own.
REQUEST_SIZE_LIMIT = 25 * 1024 * 1024
MAX_FILES_PER_MESSAGE = 10
# Room for the payload_json part: content (2000 characters), ten descriptions of up to 1024 characters, components.
REQUEST_JSON_SLACK = 64 * 1024
# A file's multipart headers.
FILE_OVERHEAD = 1024

T = TypeVar("T")


def file_limit(upload_limit: int) -> int:
    """The largest file to attach: within the server's upload limit, and alone within one request (a boosted
    server's upload limit, 50 or 100 MiB, is above Discord's 25 MiB per request)."""
    return min(upload_limit, REQUEST_SIZE_LIMIT - REQUEST_JSON_SLACK - FILE_OVERHEAD)


def pack_for_requests(
    files: Sequence[T],
    size_of: Callable[[T], int],
    *,
    request_limit: int = REQUEST_SIZE_LIMIT,
    max_files: int = MAX_FILES_PER_MESSAGE,
    overhead_per_file: int = FILE_OVERHEAD,
) -> list[list[T]]:
    """Split files into messages, in order: each at most ``max_files`` files and within ``request_limit`` bytes.

    A message's cost is its files' sizes plus ``overhead_per_file`` each (multipart headers) plus
    ``REQUEST_JSON_SLACK``. A single file too big for ``request_limit`` on its own still gets a message of its own
    (there is nothing better to do with it here), so callers should keep files within ``file_limit``.
    """
    if max_files < 1:
        raise ValueError(f"max_files must be at least 1, not {max_files}")
    groups: list[list[T]] = []
    current: list[T] = []
    current_bytes = REQUEST_JSON_SLACK
    for file in files:
        cost = size_of(file) + overhead_per_file
        if current and (len(current) >= max_files or current_bytes + cost > request_limit):
            groups.append(current)
            current, current_bytes = [], REQUEST_JSON_SLACK
        if current_bytes + cost > request_limit:
            log.warning("a file of %d bytes alone exceeds the %d-byte request limit", size_of(file), request_limit)
        current.append(file)
        current_bytes += cost
    if current:
        groups.append(current)
    return groups


def plan_messages(
    images: Sequence[DeliverableImage],
    *,
    request_limit: int = REQUEST_SIZE_LIMIT,
    max_files: int = MAX_FILES_PER_MESSAGE,
    overhead_per_file: int = FILE_OVERHEAD,
) -> list[list[DeliverableImage]]:
    """Split images into messages, in order, as ``pack_for_requests`` does with their files.

    Images without a file (links, or nothing to deliver) cost no upload: they go into the last message, or form the
    only one when no image has a file. Never returns an empty group.
    """
    groups = pack_for_requests(
        [image for image in images if image.is_upload],
        lambda image: image.size_bytes,
        request_limit=request_limit,
        max_files=max_files,
        overhead_per_file=overhead_per_file,
    )
    links = [image for image in images if not image.is_upload]
    if links:
        if groups:
            groups[-1].extend(links)
        else:
            groups.append(links)
    return groups
