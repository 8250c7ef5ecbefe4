"""The bot's settings, read from environment variables (and a ``.env`` file) as the contract lists them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from urllib.parse import urlsplit

from imaginebot.credits import CreditsFormatError, QualityWeights, parse_credits, parse_weight
from imaginebot.limits import Limit
from imaginebot.periods import Period, parse_period
from imaginebot.store.url import parse_database_url


class ConfigError(Exception):
    """A setting is missing or holds a value it cannot take. ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the bot needs from its environment. Secrets are kept out of ``repr``."""

    discord_token: str = field(repr=False)
    onemin_api_key: str = field(repr=False)
    onemin_api_url: str = "https://api.1min.ai"
    onemin_asset_url: str = "https://asset.1min.ai"
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg"
    database_url: str = "sqlite:///data/imagine.db"
    guild_id: int | None = None
    quality_weights: QualityWeights = field(default_factory=QualityWeights)
    quota_default: Limit = field(default_factory=lambda: Limit(1000, "day"))
    global_budget: Limit | None = None
    max_concurrent_jobs: int = 16
    max_jobs_per_member: int = 2
    log_level: str = "INFO"


def _get(env: Mapping[str, str], name: str) -> str | None:
    """Return a variable's value; an empty (or blank) value counts as unset."""
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _unprintable(value: str) -> bool:
    """Whether ``value`` holds a space, a line break or another control character (all refused in a header)."""
    return any(char.isspace() or not char.isprintable() for char in value)


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = _get(env, name) or default
    problem = f"must be a {' or '.join(schemes)} URL, got {value!r}"
    if _unprintable(value):
        raise ConfigError(name, problem + " (it holds a space or a control character)")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number in range raises ValueError
    except ValueError:
        raise ConfigError(name, problem + " (its host or port cannot be read)") from None
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(name, problem)
    if parts.query or parts.fragment:
        # Paths are appended to it ("/api/features"): a query would end up in the middle.
        raise ConfigError(name, problem + " without a query string or fragment")
    return value.rstrip("/")


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _get(env, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {value!r}") from None
    if number < 1:
        raise ConfigError(name, f"must be at least 1, got {number}")
    return number


def _period(env: Mapping[str, str], name: str) -> Period:
    value = _get(env, name)
    if value is None:
        return "day"
    try:
        return parse_period(value)
    except ValueError as error:
        raise ConfigError(name, str(error)) from None


def _credits(env: Mapping[str, str], name: str) -> int | None:
    value = _get(env, name)
    if value is None:
        return None
    try:
        return parse_credits(value)
    except CreditsFormatError as error:
        raise ConfigError(name, error.message) from None


def _weight(env: Mapping[str, str], name: str, default: Fraction) -> Fraction:
    value = _get(env, name)
    if value is None:
        return default
    try:
        return parse_weight(value)
    except ValueError as error:
        raise ConfigError(name, str(error)) from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (default: ``os.environ``), raising ``ConfigError`` at the first bad one."""
    env = os.environ if env is None else env
    token = _get(env, "DISCORD_TOKEN")
    if token is None:
        raise ConfigError("DISCORD_TOKEN", "is not set (the bot token from the Discord developer portal)")
    api_key = _get(env, "ONEMIN_API_KEY")
    if api_key is None:
        raise ConfigError("ONEMIN_API_KEY", "is not set (your 1min.ai API key)")
    for name, secret in (("DISCORD_TOKEN", token), ("ONEMIN_API_KEY", api_key)):
        if _unprintable(secret):  # it goes into a header; the secret itself is not repeated here
            raise ConfigError(name, "holds a space, a line break or another control character: copy it again")

    guild_text = _get(env, "DISCORD_GUILD_ID")
    guild_id = None
    if guild_text is not None:
        # Not "²" (a digit to str.isdigit, not to int()); a snowflake is a 64-bit number.
        digits = guild_text.isascii() and guild_text.isdigit() and len(guild_text) <= 20
        if not digits or not 0 < int(guild_text) < 2**64:
            raise ConfigError("DISCORD_GUILD_ID", f"must be a server id (digits), got {guild_text!r}")
        guild_id = int(guild_text)

    database_url = _get(env, "DATABASE_URL") or "sqlite:///data/imagine.db"
    try:
        parse_database_url(database_url)
    except ValueError as error:
        raise ConfigError("DATABASE_URL", str(error).removeprefix("DATABASE_URL").lstrip(": ")) from None

    default_weights = QualityWeights()
    quality_weights = QualityWeights(
        low=_weight(env, "QUALITY_WEIGHT_LOW", default_weights.low),
        medium=_weight(env, "QUALITY_WEIGHT_MEDIUM", default_weights.medium),
        high=_weight(env, "QUALITY_WEIGHT_HIGH", default_weights.high),
    )

    default_credits = _credits(env, "QUOTA_DEFAULT_CREDITS")
    quota_default = Limit(1000 if default_credits is None else default_credits, _period(env, "QUOTA_DEFAULT_PERIOD"))
    budget_credits = _credits(env, "GLOBAL_BUDGET_CREDITS")
    budget_period = _period(env, "GLOBAL_BUDGET_PERIOD")
    global_budget = None if budget_credits is None else Limit(budget_credits, budget_period)

    log_level = (_get(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("LOG_LEVEL", f"must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    return Settings(
        discord_token=token,
        onemin_api_key=api_key,
        onemin_api_url=_url(env, "ONEMIN_API_URL", "https://api.1min.ai", ("http", "https")),
        onemin_asset_url=_url(env, "ONEMIN_ASSET_URL", "https://asset.1min.ai", ("http", "https")),
        discord_api_url=_url(env, "DISCORD_API_URL", "https://discord.com/api/v10", ("http", "https")),
        discord_gateway_url=_url(env, "DISCORD_GATEWAY_URL", "wss://gateway.discord.gg", ("ws", "wss")),
        database_url=database_url,
        guild_id=guild_id,
        quality_weights=quality_weights,
        quota_default=quota_default,
        global_budget=global_budget,
        max_concurrent_jobs=_positive_int(env, "MAX_CONCURRENT_JOBS", 16),
        max_jobs_per_member=_positive_int(env, "MAX_JOBS_PER_MEMBER", 2),
        log_level=log_level,
    )
