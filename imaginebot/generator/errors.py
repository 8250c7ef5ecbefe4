"""The generator's failures, and the one function that turns an HTTP answer from 1min.ai into one of them."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from imaginebot.generator.types import GenerationResult, MalformedResult

log = logging.getLogger(__name__)

# How much of the generator's own wording a member is shown, and the operator's log gets of a non-JSON page.
_MAX_QUOTED = 300
_MAX_SNIPPET = 200

REDACTED = "[redacted]"


class GeneratorError(Exception):
    """Any failure of a generation: ``user_message`` is one sentence for the member, ``detail`` is for the log.

    ``reason`` holds the generator's own words when it gave any; ``status`` the HTTP status, when there was one.
    """

    summary: ClassVar[str] = "The image generator failed; try again later."

    def __init__(
        self,
        detail: str = "",
        *,
        status: int | None = None,
        reason: str | None = None,
        record_id: str | None = None,
    ) -> None:
        self._detail = detail or self.summary
        self.status = status
        self.reason = reason
        self.record_id = record_id
        super().__init__(self._detail)

    @property
    def detail(self) -> str:
        """What happened, for the operator's log (status, error code, the generator's words)."""
        return self._detail

    @property
    def user_message(self) -> str:
        """One plain sentence for the member who asked for the image."""
        return self.summary

    def redact(self, secret: str) -> None:
        """Remove every occurrence of ``secret`` (the API key) from the message, detail, reason and args."""
        if not secret:
            return
        self._detail = self._detail.replace(secret, REDACTED)
        if self.reason is not None:
            self.reason = self.reason.replace(secret, REDACTED)
        self.args = tuple(a.replace(secret, REDACTED) if isinstance(a, str) else a for a in self.args)


class BadRequest(GeneratorError):
    """The generator refused the request as invalid (HTTP 400 and other 4xx not covered below)."""

    summary = (
        "The generator refused the request. Try other options (size, quality, format); if it keeps happening, "
        "tell a server moderator."
    )

    @property
    def user_message(self) -> str:
        """The refusal, quoting the generator's reason when it gave one."""
        if self.reason:
            return _sentence(f"The generator refused the request: {_quote(self.reason)}")
        return self.summary


class AuthenticationFailed(GeneratorError):
    """The API key was refused (401, or a JSON 403)."""

    summary = (
        "The image service refused the bot's API key: a set-up problem on the bot's side, not your quota. "
        "Please tell a server moderator."
    )


class InsufficientCredits(GeneratorError):
    """The 1min.ai account is out of credits (402, or an error whose wording is about credits or balance)."""

    # The generator's own words (often "please top up") go to the operator's log only: to a member they read as
    # their own quota, or as an invitation to pay.
    summary = (
        "The bot's account at the image service is out of funds (this is not your quota). "
        "Please tell a server moderator."
    )


class RateLimited(GeneratorError):
    """HTTP 429: the request was not taken; it may be sent again after ``retry_after`` seconds (None: unknown)."""

    summary = "The generator is busy right now; try again in a minute."

    def __init__(
        self, retry_after: float | None = None, detail: str = "", *, out_of_funds: bool = False, **kwargs: Any
    ) -> None:
        self.retry_after = retry_after
        # The 429 said the account has run out of money: the jobs wait until the operator tops it up.
        self.out_of_funds = out_of_funds
        super().__init__(detail or f"rate limited by the generator (retry after {retry_after} s)", **kwargs)

    @property
    def user_message(self) -> str:
        """Busy, with the wait when the generator said how long."""
        if self.retry_after is not None and self.retry_after > 0:
            return f"The generator is busy right now; try again in about {math.ceil(self.retry_after)} seconds."
        return self.summary


class ContentRejected(GeneratorError):
    """The generator's safety system refused the prompt (at any status, including a 200 FAILED record)."""

    summary = "The generator's safety system rejected this prompt; try describing it differently."


class ServerError(GeneratorError):
    """The generator failed on its side: 5xx, an HTML error page, a connection failure, a malformed body."""

    summary = "The generator had a problem on its side; try again in a few minutes."


class GeneratorTimeout(GeneratorError):
    """No answer within the read timeout (or a gateway timeout, 504)."""

    summary = "The generator took too long to answer; try again later."


class GenerationFailed(GeneratorError):
    """HTTP 200, but the record's status is not SUCCESS; ``reason`` is its errorMessage."""

    summary = "The generator could not make the image; try again later."

    @property
    def user_message(self) -> str:
        """The failure, quoting the record's errorMessage when there is one."""
        if self.reason:
            return _sentence(f"The generator could not make the image: {_quote(self.reason)}")
        return self.summary


# Wording that marks a safety refusal or an empty account, wherever the generator puts it.
_SAFETY = re.compile(r"moderation|safety|content[ _-]?policy", re.IGNORECASE)
# Only wording about money: "insufficient capacity" or "not enough workers" on a 429 is a busy service, which must
# delay the job, not fail it as an empty account.
_CREDITS = re.compile(
    r"credit|(?<![a-z])balance(?![a-z])|insufficient[ _-]*(fund|quota|balance)|not enough (fund|token)s?\b"
    r"|exceeded your (current )?quota|payment required",
    re.IGNORECASE,
)
# Wording on a 429 that says the money has run out (told to the operator): "Too many requests. Your credits were not
# used." or "see your balance page" is a rate limit that merely mentions credits.
_OUT_OF_FUNDS = re.compile(
    r"insufficient[ _-]*(fund|quota|balance|credit)|not enough (fund|credit|token)s?\b|exceeded your (current )?quota"
    r"|payment required|out of (credit|fund)s?\b|(credit|balance|fund)s? (is |are )?(too low|exhausted|depleted)",
    re.IGNORECASE,
)
_NOT_CREDITS = re.compile(r"insufficient[ _-]*(permission|privilege|scope|role)s?", re.IGNORECASE)

# Keys whose string values are error wording; keys whose subtrees are the user's own text (never evidence).
_TEXT_KEYS = frozenset(
    {"message", "errormessage", "errorcode", "code", "error", "detail", "details", "reason", "msg", "description"}
)
_SKIPPED_KEYS = frozenset({"promptobject", "prompt", "teamuser", "resultobject", "temporaryurl"})


def error_from_response(
    status: int, content_type: str | None, body: bytes, headers: Mapping[str, str]
) -> GeneratorError | None:
    """Map one HTTP answer to the exception it means, or None for a 2xx body shaped like a successful generation.

    Only bodies whose Content-Type says JSON are parsed (CDNs answer 403/429/503 with HTML pages).
    """
    is_json = _is_json(content_type)
    data: Any = None
    parsed = False
    if is_json:
        try:
            data = json.loads(body)
            parsed = True
        except (ValueError, UnicodeDecodeError):
            parsed = False

    if 200 <= status < 300:
        return _error_from_2xx(status, content_type, body, is_json, parsed, data)

    texts = list(_error_texts(data)) if parsed else []
    message = _main_message(data, texts) if parsed else None
    code = _error_code(data) if parsed else None
    label = f"HTTP {status}" + (f" {code}" if code else "")
    words = message or (None if parsed else _snippet(content_type, body))
    detail = f"{label} from the generator" + (f": {words}" if words else "")
    kwargs: dict[str, Any] = {"status": status, "reason": message}

    if _mentions_safety(texts):
        return ContentRejected(detail, **kwargs)
    if status == 429:
        # Every 429 delays the job, never fails it (the contract), even one saying the account is out of funds
        # (OpenAI's insufficient_quota is a 429): the operator is told in the log, and the jobs go once it is topped up.
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        out_of_funds = _says_out_of_funds(texts)
        if out_of_funds:
            detail += " (it says the account is out of funds: top it up; the jobs wait meanwhile)"
        return RateLimited(retry_after, detail, out_of_funds=out_of_funds, **kwargs)
    if status == 402 or (400 <= status < 500 and _mentions_credits(texts)):
        return InsufficientCredits(detail, **kwargs)
    if status == 401 or (status == 403 and parsed):
        return AuthenticationFailed(detail, **kwargs)
    if status == 403:
        return ServerError(f"{detail} (a non-JSON 403, likely a CDN or firewall page)", **kwargs)
    if status in (408, 504, 524):
        return GeneratorTimeout(detail, **kwargs)
    if status in (404, 405):
        return ServerError(f"{detail} (is ONEMIN_API_URL right?)", **kwargs)
    if 400 <= status < 500:
        return BadRequest(detail, **kwargs)
    return ServerError(detail, **kwargs)


def _error_from_2xx(
    status: int, content_type: str | None, body: bytes, is_json: bool, parsed: bool, data: Any
) -> GeneratorError | None:
    if not is_json:
        if _is_generation(body):  # mislabelled (a proxy's text/plain, say), but a result paid for: keep it
            return None
        return ServerError(
            f"HTTP {status} with Content-Type {content_type!r} instead of JSON: {_snippet(content_type, body)}",
            status=status,
        )
    if not parsed:
        return ServerError(f"HTTP {status} with a body that is not valid JSON ({len(body)} bytes)", status=status)
    record = data.get("aiRecord") if isinstance(data, Mapping) else None
    if isinstance(record, Mapping) and record.get("status") not in (None, "SUCCESS"):
        return _failed_record(status, record, data)
    try:
        GenerationResult.from_json(data)
    except MalformedResult as exc:
        texts = list(_error_texts(data))
        message = _main_message(data, texts)
        kwargs: dict[str, Any] = {"status": status, "reason": message}
        # Without a record, error wording is all there is to go on.
        if record is None and _mentions_safety(texts):
            return ContentRejected(f"HTTP {status} without a record: {message}", **kwargs)
        if record is None and _mentions_credits(texts):
            return InsufficientCredits(f"HTTP {status} without a record: {message}", **kwargs)
        return ServerError(
            f"HTTP {status} with an unexpected body: {exc}" + (f" (message: {message})" if message else ""), **kwargs
        )
    return None


def _is_generation(body: bytes) -> bool:
    """Whether ``body`` is, whatever its Content-Type, a successful generation's JSON."""
    try:
        data = json.loads(body)
        record = data.get("aiRecord") if isinstance(data, Mapping) else None
        if not isinstance(record, Mapping) or record.get("status") not in (None, "SUCCESS"):
            return False
        GenerationResult.from_json(data)
    except (ValueError, UnicodeDecodeError, MalformedResult):
        return False
    return True


def _failed_record(status: int, record: Mapping[str, Any], data: Mapping[str, Any]) -> GeneratorError:
    record_status = record.get("status")
    record_id = record.get("uuid") if isinstance(record.get("uuid"), str) else None
    detail_obj = record.get("aiRecordDetail")
    reason = None
    if isinstance(detail_obj, Mapping) and isinstance(detail_obj.get("errorMessage"), str):
        reason = detail_obj["errorMessage"].strip() or None
    texts = list(_error_texts(data))
    if reason is None:
        reason = _main_message(data, texts)
    if reason is not None and reason not in texts:
        texts.append(reason)
    detail = f"HTTP {status} but aiRecord.status is {record_status!r}" + (f": {reason}" if reason else "")
    kwargs: dict[str, Any] = {"status": status, "reason": reason, "record_id": record_id}
    if _mentions_safety(texts):
        return ContentRejected(detail, **kwargs)
    if _mentions_credits(texts):
        return InsufficientCredits(detail, **kwargs)
    return GenerationFailed(detail, **kwargs)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime.endswith("/json") or mime.endswith("+json")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Plain dicts are case-sensitive; HTTP header names are not.
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None


def _error_texts(data: Any, *, under_text_key: bool = False) -> Iterator[str]:
    """Every string found under an error-ish key, skipping the user's own prompt and the record's payload."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            lowered = str(key).lower()
            if lowered in _SKIPPED_KEYS:
                continue
            is_text_key = lowered in _TEXT_KEYS
            if isinstance(value, str):
                if is_text_key and value.strip():
                    yield value.strip()
            else:
                yield from _error_texts(value, under_text_key=is_text_key)
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, str):
                if under_text_key and item.strip():
                    yield item.strip()
            else:
                yield from _error_texts(item, under_text_key=under_text_key)


def _main_message(data: Any, texts: list[str]) -> str | None:
    """The most human sentence among the error texts (a message beats a code such as MISSING_REQUIRED_FIELDS)."""
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str) and error["message"].strip():
            return error["message"].strip()
        for key in ("message", "errorMessage", "detail", "error"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return "; ".join(v.strip() for v in value if v.strip()) or None
    for text in texts:
        if " " in text:
            return text
    return texts[0] if texts else None


def _error_code(data: Any) -> str | None:
    if not isinstance(data, Mapping):
        return None
    code = data.get("errorCode")
    error = data.get("error")
    if code is None and isinstance(error, Mapping):
        code = error.get("code")
    return code if isinstance(code, str) and code.strip() else None


def _mentions_safety(texts: list[str]) -> bool:
    return any(_SAFETY.search(text) for text in texts)


def _mentions_credits(texts: list[str]) -> bool:
    return any(_CREDITS.search(_NOT_CREDITS.sub("", text)) for text in texts)


def _says_out_of_funds(texts: list[str]) -> bool:
    return any(_OUT_OF_FUNDS.search(text) for text in texts)


def _snippet(content_type: str | None, body: bytes) -> str:
    """A short, log-safe hint of a non-JSON body: an HTML page's title, else its first characters."""
    text = body[:20_000].decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    text = title.group(1) if title and title.group(1).strip() else re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    kind = (content_type or "no Content-Type").split(";", 1)[0]
    return f"[{kind}] {text[:_MAX_SNIPPET]}" if text else f"[{kind}] empty body"


def _quote(text: str) -> str:
    """The generator's words on one line, short enough for a chat message."""
    text = " ".join(text.split())
    if len(text) > _MAX_QUOTED:
        text = text[: _MAX_QUOTED - 1].rstrip() + "…"
    return text


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?", "…")) else text + "."
