"""What the bot asks the generator for, what a generation returns, and what a downloaded image is."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

MODEL = "gpt-image-2"
FEATURE_TYPE = "IMAGE_GENERATOR"

Quality = Literal["low", "medium", "high"]
OutputFormat = Literal["png", "jpeg", "webp"]
Background = Literal["auto", "opaque"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation as the bot wants it; the caller has already checked sizes, counts and options."""

    prompt: str
    width: int
    height: int
    quality: Quality
    count: int
    output_format: OutputFormat
    background: Background | None = None
    compression: int | None = None

    @property
    def size(self) -> str:
        """The size as the API spells it, ``"WxH"``."""
        return f"{self.width}x{self.height}"

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of ``POST /api/features``; background and compression appear only when given."""
        prompt_object: dict[str, Any] = {
            "prompt": self.prompt,
            "size": self.size,
            "quality": self.quality,
            "n": self.count,
            "output_format": self.output_format,
        }
        if self.background is not None:
            prompt_object["background"] = self.background
        if self.compression is not None:
            prompt_object["output_compression"] = self.compression
        return {"type": FEATURE_TYPE, "model": MODEL, "promptObject": prompt_object}


class MalformedResult(ValueError):
    """A 2xx body that does not have the shape of a successful generation."""


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """A successful generation: where its images are, and what 1min.ai said about it."""

    record_id: str | None
    asset_paths: list[str]
    temporary_url: str | None
    reported_credits: int | float | None
    elapsed: float

    @property
    def image_count(self) -> int:
        """How many images the result holds (a presigned URL alone still counts as one)."""
        return max(len(self.asset_paths), 1 if self.temporary_url else 0)

    @classmethod
    def from_json(cls, data: Any, *, elapsed: float = 0.0) -> GenerationResult:
        """Read a successful ``/api/features`` body; raise MalformedResult when it is not one.

        The record's status must be ``SUCCESS`` (a missing status is tolerated when images are present, so a
        paid-for result is not thrown away over a missing field). A top-level ``message`` is ignored.
        """
        if not isinstance(data, Mapping):
            raise MalformedResult("the body is not a JSON object")
        record = data.get("aiRecord")
        if not isinstance(record, Mapping):
            raise MalformedResult("the body has no aiRecord object")
        status = record.get("status")
        if status is not None and status != "SUCCESS":
            raise MalformedResult(f"aiRecord.status is {status!r}")
        detail = record.get("aiRecordDetail")
        raw_paths = detail.get("resultObject") if isinstance(detail, Mapping) else None
        if isinstance(raw_paths, str):
            raw_paths = [raw_paths]
        if raw_paths is None:
            raw_paths = []
        if not isinstance(raw_paths, list) or not all(isinstance(p, str) and p.strip() for p in raw_paths):
            raise MalformedResult("aiRecordDetail.resultObject is not a list of asset paths")
        temporary_url = _non_empty_str(record.get("temporaryUrl")) or _non_empty_str(data.get("temporaryUrl"))
        if not raw_paths and temporary_url is None:
            raise MalformedResult("the record holds no image (empty resultObject and no temporaryUrl)")
        metadata = record.get("metadata")
        credits = _number(metadata.get("credit")) if isinstance(metadata, Mapping) else None
        return cls(
            record_id=_non_empty_str(record.get("uuid")),
            asset_paths=[p.strip().lstrip("/") for p in raw_paths],
            temporary_url=temporary_url,
            reported_credits=credits,
            elapsed=elapsed,
        )


@dataclass(slots=True)
class DownloadedImage:
    """One image of a result, fetched to a temporary file or, if small, into memory (or the reason it could
    not be).

    The caller owns the file: delete it with ``discard()`` once the image has been delivered.
    """

    index: int
    path: Path | None
    size_bytes: int
    content_type: str | None
    source_url: str
    link_expires_at: datetime | None
    error: str | None
    data: bytes | None = None

    @property
    def ok(self) -> bool:
        """Whether the bytes are here, on disk or in memory."""
        return (self.path is not None or self.data is not None) and self.error is None

    def discard(self) -> None:
        """Delete the temporary file, if any; safe to call twice."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.path = None


def _non_empty_str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _number(value: Any) -> int | float | None:
    # bool is an int subclass and never a credit amount.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() and "." not in value else number
    return None
