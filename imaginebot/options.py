"""What a member asked ``/imagine`` for, checked against the generator's rules and the server's settings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from imaginebot.blocked_words import find_blocked
from imaginebot.generator.types import GenerationRequest
from imaginebot.sizes import DEFAULT_SIZE, Size, SizeError, check_size, valid_size_or_none

Quality = Literal["low", "medium", "high"]
OutputFormat = Literal["png", "jpeg", "webp"]
Background = Literal["auto", "opaque"]
QUALITIES: tuple[str, ...] = get_args(Quality)
FORMATS: tuple[str, ...] = get_args(OutputFormat)
BACKGROUNDS: tuple[str, ...] = get_args(Background)

MAX_PROMPT_LENGTH = 4000
MAX_COUNT = 10
DEFAULT_QUALITY: Quality = "medium"
DEFAULT_COUNT = 1
DEFAULT_FORMAT: OutputFormat = "png"


class OptionError(ValueError):
    """An option the member gave cannot be used. ``message`` says what is wrong and how to fix it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ServerDefaults:
    """A server's own defaults for ``/imagine`` (None = the bot's default) and its limits on what may be asked."""

    size: str | None = None
    quality: str | None = None
    count: int | None = None
    output_format: str | None = None
    max_count: int | None = None


@dataclass(frozen=True, slots=True)
class ImagineOptions:
    """A complete, valid ``/imagine`` request."""

    prompt: str
    size: Size
    quality: Quality
    count: int
    output_format: OutputFormat
    background: Background | None = None
    compression: int | None = None

    def to_generation_request(self) -> GenerationRequest:
        """The request to send to the generator."""
        return GenerationRequest(
            prompt=self.prompt,
            width=self.size.width,
            height=self.size.height,
            quality=self.quality,
            count=self.count,
            output_format=self.output_format,
            background=self.background,
            compression=self.compression,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, stored with the job so it can be re-run or answered after a restart."""
        return {
            "prompt": self.prompt,
            "size": str(self.size),
            "quality": self.quality,
            "count": self.count,
            "format": self.output_format,
            "background": self.background,
            "compression": self.compression,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagineOptions:
        """Rebuild options saved by ``to_dict``."""
        return cls(
            prompt=data["prompt"],
            size=check_size(data["size"]),
            quality=data["quality"],
            count=int(data["count"]),
            output_format=data["format"],
            background=data.get("background"),
            compression=data.get("compression"),
        )


def check_prompt(prompt: str) -> str:
    """Return the prompt with surrounding blanks removed, or raise ``OptionError`` if empty or too long."""
    text = prompt.strip()
    if not text:
        raise OptionError(
            "The prompt is empty. Describe the image you want, e.g. `a lighthouse at dusk, oil painting`."
        )
    if len(text) > MAX_PROMPT_LENGTH:
        raise OptionError(
            f"The prompt is {len(text):,} characters long; the generator takes at most {MAX_PROMPT_LENGTH:,}. "
            f"Shorten it by {len(text) - MAX_PROMPT_LENGTH:,} characters."
        )
    return text


def check_not_blocked(prompt: str, blocked_words: Iterable[str]) -> None:
    """Refuse a prompt containing a word the server blocked, without repeating the word back."""
    if find_blocked(prompt, blocked_words) is not None:
        raise OptionError(
            "Your prompt contains a word or phrase this server's moderators have blocked. Rephrase it and try again."
        )


def _choice(value: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if value is None:
        return None
    text = value.strip().lower()
    if text not in allowed:
        raise OptionError(f"`{what}` must be one of {', '.join(allowed)}.")
    return text


def resolve_options(
    *,
    prompt: str,
    size: str | None = None,
    quality: str | None = None,
    count: int | None = None,
    background: str | None = None,
    output_format: str | None = None,
    compression: int | None = None,
    server: ServerDefaults | None = None,
) -> ImagineOptions:
    """Apply the server's defaults to what the member typed and check every rule; raise ``OptionError``."""
    server = server or ServerDefaults()
    text = check_prompt(prompt)

    if size is not None and size.strip():
        try:
            chosen_size = check_size(size)
        except SizeError as error:
            raise OptionError(error.message) from None
    else:
        # The server's default, checked when it was set; one saved under older rules that no longer holds gives
        # way to the bot's default, rather than refusing a size the member never typed.
        chosen_size = valid_size_or_none(server.size) or DEFAULT_SIZE

    chosen_quality = _choice(quality, QUALITIES, "quality") or server.quality or DEFAULT_QUALITY
    chosen_format = _choice(output_format, FORMATS, "format") or server.output_format or DEFAULT_FORMAT
    chosen_background = _choice(background, BACKGROUNDS, "background")

    max_count = min(server.max_count or MAX_COUNT, MAX_COUNT)
    chosen_count = count if count is not None else min(server.count or DEFAULT_COUNT, max_count)
    if not 1 <= chosen_count <= MAX_COUNT:
        raise OptionError(f"`count` must be between 1 and {MAX_COUNT}.")
    if chosen_count > max_count:
        raise OptionError(
            f"This server allows at most {max_count} image{'s' if max_count != 1 else ''} per request; "
            f"run `/imagine` with `count:` {max_count} or fewer."
        )

    if compression is not None:
        if not 0 <= compression <= 100:
            raise OptionError("`compression` must be between 0 and 100 (higher keeps more quality).")
        if chosen_format not in ("jpeg", "webp"):
            raise OptionError(
                f"`compression` only works with the jpeg or webp format, and this request would be {chosen_format}. "
                "Add `format: jpeg` or `format: webp`, or leave compression out."
            )

    return ImagineOptions(
        prompt=text,
        size=chosen_size,
        quality=chosen_quality,  # type: ignore[arg-type]
        count=chosen_count,
        output_format=chosen_format,  # type: ignore[arg-type]
        background=chosen_background,  # type: ignore[arg-type]
        compression=compression,
    )
