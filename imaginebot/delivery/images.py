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
    ``path`` is ``None`` when the image could not be downloaded: it must then be posted as ``fallback_url``
    rather than be lost. ``link_expires_at`` is when ``fallback_url`` stops working, if known.
    """

    index: int
    path: Path | None
    size_bytes: int
    fallback_url: str | None
    link_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliverableImage:
    """One image ready to post: a file to attach (``path``), or else a link (``link``) with a note saying why.

    ``filename`` is the name to give the attachment (``imagine-<index + 1>.<ext>``, the extension matching the
    file's actual format). ``note`` tells the member in plain words what was changed (re-encoded, scaled down,
    posted as a link) and is ``None`` when the image is delivered untouched. An image with neither ``path`` nor
    ``link`` could not be delivered at all; its ``note`` says so. ``data`` is the file's content when it was
    read beforehand (small files, see ``fit_for_upload``), so that uploading it needs no file access.
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
        return self.path is not None
