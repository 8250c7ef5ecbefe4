"""What goes into delivery (a generated image on disk) and what comes out (a file to upload, or a link)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceImage:
    """One generated image as downloaded, before it is fitted into Discord's limits.

    ``index`` is the image's 0-based position in the generator's result (``resultObject[index]``).
    The image is in the file ``path``, or in memory (``data``, a small one). With neither, it could not be
    downloaded: it must then be posted as ``fallback_url`` rather than be lost. ``link_expires_at`` is when
    ``fallback_url`` stops working, if known.
    """

    index: int
    path: Path | None
    size_bytes: int
    fallback_url: str | None
    link_expires_at: datetime | None
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeliverableImage:
    """One image ready to post: a file to attach (``path``), or else a link (``link``) with a note saying why.

    ``filename`` is the name to give the attachment (``imagine-<index + 1>.<ext>``, the extension matching the
    file's actual format). ``note`` tells the member in plain words what was changed (re-encoded, scaled down,
    posted as a link) and is ``None`` when the image is delivered untouched. A small image may be attached from
    memory (``data``) instead of a file. An image with neither ``path``, ``data`` nor ``link`` could not be
    delivered at all; its ``note`` says so.
    """

    index: int
    path: Path | None
    filename: str
    size_bytes: int
    link: str | None
    link_expires_at: datetime | None
    note: str | None
    width: int | None
    height: int | None
    data: bytes | None = None

    @property
    def is_upload(self) -> bool:
        """Whether this image is attached as a file (otherwise it is posted as a link, or not at all)."""
        return self.path is not None or self.data is not None
