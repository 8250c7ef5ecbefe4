"""Messages from request bodies: Discord's limits on them, creating them, editing them."""

from __future__ import annotations

import logging
import mimetypes
from datetime import UTC, datetime
from typing import Any

from .errors import DiscordHTTPError, invalid_form_body
from .models import (
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
    FakeAttachment,
    FakeMessage,
    RecordedFile,
    new_snowflake,
)

log = logging.getLogger(__name__)

MAX_CONTENT = 2000  # a bot's limit, though the OpenAPI description allows 4000
MAX_FILES = 10
MAX_EMBEDS_TOTAL = 6000


def check_files(files: list[RecordedFile], file_size_limit: int) -> None:
    """Raise Discord's answer to too many files (400/50035) or a file over the limit (413/40005)."""
    if len(files) > MAX_FILES:
        raise invalid_form_body(
            ("attachments",),
            "BASE_TYPE_MAX_LENGTH",
            f"Must be {MAX_FILES} or fewer in length.",
            problem=f"{len(files)} files in one message; the maximum is {MAX_FILES}",
        )
    for file in files:
        if len(file.data) > file_size_limit:
            raise DiscordHTTPError(
                413,
                40005,
                "Request entity too large",
                problem=f"file {file.filename!r} is {len(file.data)} bytes; the limit is {file_size_limit}",
            )


def check_message_body(body: dict[str, Any] | None, files: list[RecordedFile], *, creating: bool) -> None:
    """Raise the error Discord answers when a message body breaks its limits (beyond what the spec checks)."""
    body = body or {}
    content = body.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        raise invalid_form_body(
            ("content",),
            "BASE_TYPE_MAX_LENGTH",
            f"Must be {MAX_CONTENT} or fewer in length.",
            problem=f"content of {len(content)} characters; a bot may send at most {MAX_CONTENT}",
        )
    total = sum(_embed_size(e) for e in body.get("embeds") or () if isinstance(e, dict))
    if total > MAX_EMBEDS_TOTAL:
        raise invalid_form_body(
            ("embeds",),
            "MAX_EMBED_SIZE_EXCEEDED",
            f"Embed size exceeds maximum size of {MAX_EMBEDS_TOTAL}",
            problem=f"embeds total {total} characters; the maximum is {MAX_EMBEDS_TOTAL}",
        )
    if creating and not (content or body.get("embeds") or body.get("components") or files or body.get("poll")):
        raise DiscordHTTPError(400, 50006, "Cannot send an empty message", problem="empty message")
    _check_allowed_mentions(body.get("allowed_mentions"))


def _check_allowed_mentions(allowed: Any) -> None:
    """Discord refuses a list of users (or roles) beside "users" (or "roles") in ``parse``: they contradict."""
    if not isinstance(allowed, dict):
        return
    parse = allowed.get("parse") or ()
    for kind in ("users", "roles"):
        if kind in parse and allowed.get(kind):
            raise invalid_form_body(
                ("allowed_mentions",),
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
                problem=f"allowed_mentions both parses {kind} and lists them",
            )


def _embed_size(embed: dict[str, Any]) -> int:
    size = len(embed.get("title") or "") + len(embed.get("description") or "")
    size += len((embed.get("footer") or {}).get("text") or "") + len((embed.get("author") or {}).get("name") or "")
    for item in embed.get("fields") or ():
        size += len(item.get("name") or "") + len(item.get("value") or "")
    return size


def new_message(
    body: dict[str, Any] | None,
    files: list[RecordedFile],
    *,
    channel_id: int,
    guild_id: int | None,
    author_id: int,
    attachment_url: str,
    webhook_token: str | None = None,
    application_id: int | None = None,
    interaction_id: int | None = None,
) -> FakeMessage:
    """A message as Discord stores it from a create body (JSON or payload_json) and its files."""
    message = FakeMessage(
        id=new_snowflake(),
        channel_id=channel_id,
        guild_id=guild_id,
        author_id=author_id,
        webhook_token=webhook_token,
        application_id=application_id,
        interaction_id=interaction_id,
    )
    fill_message(message, body or {}, files, attachment_url)
    return message


def fill_message(message: FakeMessage, body: dict[str, Any], files: list[RecordedFile], attachment_url: str) -> None:
    """Set a message's whole content from a create body (fields it leaves out become empty)."""
    message.content = body.get("content") or ""
    message.embeds = list(body.get("embeds") or [])
    message.components = list(body.get("components") or [])
    message.flags = int(body.get("flags") or 0)
    message.tts = bool(body.get("tts"))
    message.allowed_mentions = body.get("allowed_mentions")
    message.attachments = _attachments(body.get("attachments"), files, [], attachment_url, message.channel_id)


def edit_message(message: FakeMessage, body: dict[str, Any], files: list[RecordedFile], attachment_url: str) -> None:
    """Apply an edit body: only the fields it names change; `attachments` lists the ones to keep."""
    if "content" in body:
        message.content = body["content"] or ""
    if "embeds" in body:
        message.embeds = list(body["embeds"] or [])
    if "components" in body:
        message.components = list(body["components"] or [])
    if body.get("flags") is not None:
        # Visibility and the loading state cannot be changed by an edit.
        kept = message.flags & (MESSAGE_FLAG_EPHEMERAL | MESSAGE_FLAG_LOADING)
        message.flags = kept | (int(body["flags"]) & ~(MESSAGE_FLAG_EPHEMERAL | MESSAGE_FLAG_LOADING))
    if "allowed_mentions" in body:
        message.allowed_mentions = body["allowed_mentions"]
    if "attachments" in body or files:
        message.attachments = _attachments(
            body.get("attachments"), files, message.attachments, attachment_url, message.channel_id
        )
    message.flags &= ~MESSAGE_FLAG_LOADING
    message.edits += 1
    message.edited_at = datetime.now(UTC)


def _attachments(
    described: list[dict[str, Any]] | None,
    files: list[RecordedFile],
    existing: list[FakeAttachment],
    attachment_url: str,
    channel_id: int,
) -> list[FakeAttachment]:
    """The attachments a body asks for: new files (matched by index id to files[n]) and existing ones by id.

    Without an `attachments` list, existing attachments are kept and every file is added.
    """
    uploads = {_file_index(f.name, n): f for n, f in enumerate(files)}

    def upload(index: int, entry: dict[str, Any]) -> FakeAttachment:
        file = uploads.pop(index)
        filename = entry.get("filename") or file.filename
        attachment_id = new_snowflake()
        return FakeAttachment(
            id=attachment_id,
            filename=filename,
            data=file.data,
            content_type=_content_type(filename, file.content_type),
            description=entry.get("description"),
            url=f"{attachment_url}/{channel_id}/{attachment_id}/{filename}",
        )

    if described is None:
        result = list(existing)
        result += [upload(i, {}) for i in sorted(uploads)]
        return result
    by_id = {a.id: a for a in existing}
    result = []
    for entry in described:
        entry_id = int(entry["id"])
        if entry_id in uploads:
            result.append(upload(entry_id, entry))
        elif entry_id in by_id:
            kept = by_id[entry_id]
            if "description" in entry:
                kept.description = entry["description"]
            result.append(kept)
    # Files the list did not mention are still uploaded, as Discord does.
    result += [upload(i, {}) for i in sorted(uploads)]
    return result


def _file_index(field_name: str, position: int) -> int:
    """`files[3]` -> 3 (discord.py numbers its parts; other clients may use other names: fall back on order)."""
    if field_name.startswith("files[") and field_name.endswith("]"):
        digits = field_name[6:-1]
        if digits.isdigit():
            return int(digits)
    return position


_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def _content_type(filename: str, declared: str | None) -> str | None:
    # Discord infers the type from the file name (discord.py declares every part application/octet-stream).
    suffix = filename[filename.rfind(".") :].lower() if "." in filename else ""
    guessed = _IMAGE_TYPES.get(suffix) or mimetypes.guess_type(filename)[0]
    return guessed or declared
