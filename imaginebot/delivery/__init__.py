"""Delivering generated images through Discord: fitting files under the upload limits, grouping them into
messages, and describing them for screen readers. Never imports discord.

Typical use in a cog::

    fitted = await fit_for_upload(sources, file_limit=interaction.filesize_limit, workdir=job_dir,
                                  preferred_format=fmt)
    for group in plan_messages(fitted):
        files = [discord.File(i.path, filename=i.filename, description=alt_text(prompt, i.index, len(fitted)))
                 for i in group if i.is_upload]
        ...  # notes and links of the group go into the message text
"""

from __future__ import annotations

from imaginebot.delivery.alt_text import DESCRIPTION_LIMIT, alt_text
from imaginebot.delivery.batching import (
    MAX_FILES_PER_MESSAGE,
    REQUEST_JSON_SLACK,
    REQUEST_SIZE_LIMIT,
    file_limit,
    plan_messages,
)
from imaginebot.delivery.fitting import (
    MAX_PARALLEL_FITS,
    MIN_SCALED_SIDE,
    QUALITY_MAX,
    QUALITY_MIN,
    OutputFormat,
    describe_size,
    fit_for_upload,
)
from imaginebot.delivery.images import DeliverableImage, SourceImage

__all__ = [
    "DESCRIPTION_LIMIT",
    "MAX_FILES_PER_MESSAGE",
    "MAX_PARALLEL_FITS",
    "MIN_SCALED_SIDE",
    "QUALITY_MAX",
    "QUALITY_MIN",
    "REQUEST_JSON_SLACK",
    "REQUEST_SIZE_LIMIT",
    "DeliverableImage",
    "OutputFormat",
    "SourceImage",
    "alt_text",
    "describe_size",
    "file_limit",
    "fit_for_upload",
    "plan_messages",
]
