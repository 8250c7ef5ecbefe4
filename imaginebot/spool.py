"""Where images wait on disk between their download and their upload, and the sweep of what a crash left there.

Downloaded images over the in-memory size and re-encoded ones are files in one folder of the system's temporary
directory, ``imaginebot-<uid>``, private to the user the bot runs as. A job removes its own files when it ends, even
when it is cancelled; a process killed outright (SIGKILL, out of memory) cannot, so each start removes what is older
than ``STALE_AFTER``: no job holds a file that long.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

STALE_AFTER = 3600.0


def prepare_spool() -> Path:
    """The folder for the bot's temporary image files, with the leftovers of earlier runs swept; runs in a thread.

    Should the folder be someone else's (another user's, or a link planted in a shared /tmp), a fresh private
    one is made instead.
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    folder = Path(tempfile.gettempdir()) / ("imaginebot" if uid is None else f"imaginebot-{uid}")
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        status = folder.lstat()
        if folder.is_symlink() or (uid is not None and status.st_uid != uid):
            raise PermissionError(f"{folder} is not the bot's own folder")
    except OSError as error:
        fresh = Path(tempfile.mkdtemp(prefix="imaginebot-"))
        log.warning("using %s for temporary images (%s)", fresh, error)
        return fresh
    sweep_leftovers(folder)
    return folder


def sweep_leftovers(folder: Path, *, older_than: float = STALE_AFTER) -> int:
    """Remove the files and work folders in ``folder`` last changed more than ``older_than`` seconds ago; how many.

    Runs in a thread at start. Anything it cannot remove is left for the next start.
    """
    if not folder.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for entry in folder.iterdir():
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError as error:
            log.warning("could not remove the leftover %s: %s", entry, error)
    if removed:
        log.info("removed %d leftover image file(s) or folder(s) from %s", removed, folder)
    return removed
