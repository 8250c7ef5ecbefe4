"""The folder for temporary image files: private, and swept of what a killed process left there."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from imaginebot import spool as spool_module
from imaginebot.spool import prepare_spool, sweep_leftovers


def aged(path: Path, seconds: float) -> Path:
    when = time.time() - seconds
    os.utime(path, (when, when))
    return path


def test_files_and_work_folders_older_than_an_hour_are_swept_and_newer_ones_kept(tmp_path: Path) -> None:
    old_file = tmp_path / "imagine-rec-0-abc.png"
    old_file.write_bytes(b"x")
    aged(old_file, 7200)
    old_folder = tmp_path / "imagine-job-7-cafe0123"
    old_folder.mkdir()
    (old_folder / "imagine-1-x.jpg").write_bytes(b"y")
    aged(old_folder, 7200)
    fresh = tmp_path / "imagine-rec-1-def.png"
    fresh.write_bytes(b"z")  # a job running now
    assert sweep_leftovers(tmp_path) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == [fresh.name]


def test_the_folder_is_private_and_a_planted_link_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = prepare_spool()
    assert folder.parent == tmp_path and folder.is_dir() and (folder.stat().st_mode & 0o077) == 0
    assert prepare_spool() == folder  # the same one next time
    folder.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere)  # someone else's link where the folder would be
    other = prepare_spool()
    assert other != folder and other.is_dir() and not other.is_symlink()
