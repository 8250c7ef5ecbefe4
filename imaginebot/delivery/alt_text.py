"""Alt text for delivered images, so screen readers can describe them."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Discord's limit on an attachment's description.
DESCRIPTION_LIMIT = 1024
ELLIPSIS = "…"


def alt_text(prompt: str, index: int, count: int, limit: int = DESCRIPTION_LIMIT) -> str:
    """Describe image ``index`` (0-based, as in ``DeliverableImage.index``) of ``count`` from its prompt.

    The prompt's whitespace is collapsed (markdown stays as plain text: descriptions are not rendered), it is
    prefixed ``"Image 2 of 4: "`` when ``count > 1``, and the result is cut at a word boundary with ``"…"`` so that
    it is at most ``limit`` characters.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"index must be in 0..{count - 1}, not {index} (count {count})")
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")
    text = " ".join(prompt.split())
    prefix = f"Image {index + 1} of {count}" if count > 1 else ""
    if not text:
        return (prefix or "Generated image")[:limit]
    if prefix:
        prefix += ": "
    if len(prefix) + len(text) <= limit:
        return prefix + text

    room = limit - len(prefix) - len(ELLIPSIS)
    if room < 1:
        # No room for any of the prompt beside the prefix: a hard cut still keeps within the limit.
        return (prefix + text)[:limit]
    cut = text[:room]
    if text[room] != " ":
        # Back off to the last whole word, unless the first word alone is longer than the room.
        last_space = cut.rfind(" ")
        if last_space > 0:
            cut = cut[:last_space]
    return prefix + cut.rstrip() + ELLIPSIS
