"""Grouping fitted images into messages that Discord accepts: at most 10 files and about 25 MiB per request."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from imaginebot.delivery.images import DeliverableImage

log = logging.getLogger(__name__)

# Discord refuses a whole request above this (HTTP 413, code 40005), even when every file fits on its own.
REQUEST_SIZE_LIMIT = 25 * 1024 * 1024
MAX_FILES_PER_MESSAGE = 10
# Room for the payload_json part: content (2000 characters), ten descriptions of up to 1024 characters, components.
REQUEST_JSON_SLACK = 64 * 1024


def plan_messages(
    images: Sequence[DeliverableImage],
    *,
    request_limit: int = REQUEST_SIZE_LIMIT,
    max_files: int = MAX_FILES_PER_MESSAGE,
    overhead_per_file: int = 1024,
) -> list[list[DeliverableImage]]:
    """Split images into messages, in order: each at most ``max_files`` files and within ``request_limit`` bytes.

    A message's cost is its files' ``size_bytes`` plus ``overhead_per_file`` each (multipart headers) plus
    ``REQUEST_JSON_SLACK``. Images without a file (links, or nothing to deliver) cost no upload: they go into the
    last message, or form the only one when no image has a file. A single file too big for ``request_limit`` on
    its own still gets a message of its own (there is nothing better to do with it here), so callers should fit
    files to at most ``request_limit - REQUEST_JSON_SLACK - overhead_per_file``. Never returns an empty group.
    """
    if max_files < 1:
        raise ValueError(f"max_files must be at least 1, not {max_files}")
    groups: list[list[DeliverableImage]] = []
    current: list[DeliverableImage] = []
    current_bytes = REQUEST_JSON_SLACK
    for image in images:
        if not image.is_upload:
            continue
        cost = image.size_bytes + overhead_per_file
        if current and (len(current) >= max_files or current_bytes + cost > request_limit):
            groups.append(current)
            current, current_bytes = [], REQUEST_JSON_SLACK
        if current_bytes + cost > request_limit:
            log.warning(
                "image %d (%d bytes) alone exceeds the %d-byte request limit",
                image.index,
                image.size_bytes,
                request_limit,
            )
        current.append(image)
        current_bytes += cost
    if current:
        groups.append(current)

    links = [image for image in images if not image.is_upload]
    if links:
        if groups:
            groups[-1].extend(links)
        else:
            groups.append(links)
    return groups
