"""Settings from the environment: required variables, defaults, and a clear refusal of bad values."""

from __future__ import annotations

from fractions import Fraction

import pytest

from imaginebot.config import ConfigError, load_settings
from imaginebot.limits import Limit

BASE = {"DISCORD_TOKEN": "tok", "ONEMIN_API_KEY": "key"}


def test_defaults_follow_the_contract() -> None:
    settings = load_settings(BASE)
    assert settings.onemin_api_url == "https://api.1min.ai"
    assert settings.onemin_asset_url == "https://asset.1min.ai"
    assert settings.discord_api_url == "https://discord.com/api/v10"
    assert settings.discord_gateway_url == "wss://gateway.discord.gg"
    assert settings.database_url == "sqlite:///data/imagine.db"
    assert settings.guild_id is None
    assert settings.quota_default == Limit(1000, "day")
    assert settings.global_budget is None
    assert (settings.max_concurrent_jobs, settings.max_jobs_per_member) == (16, 2)
    weights = settings.quality_weights
    assert (weights.low, weights.medium, weights.high) == (Fraction(1, 4), 1, 4)


@pytest.mark.parametrize("missing", ["DISCORD_TOKEN", "ONEMIN_API_KEY"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_or_empty_required_variable_is_named(missing: str, value: str | None) -> None:
    env = dict(BASE)
    if value is None:
        del env[missing]
    else:
        env[missing] = value
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == missing


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_CONCURRENT_JOBS", "0"),
        ("MAX_CONCURRENT_JOBS", "lots"),
        ("MAX_JOBS_PER_MEMBER", "-1"),
        ("QUOTA_DEFAULT_CREDITS", "1.005"),
        ("QUOTA_DEFAULT_CREDITS", "-3"),
        ("QUOTA_DEFAULT_PERIOD", "year"),
        ("GLOBAL_BUDGET_CREDITS", "abc"),
        ("GLOBAL_BUDGET_PERIOD", "fortnight"),
        ("QUALITY_WEIGHT_HIGH", "0"),
        ("QUALITY_WEIGHT_LOW", "cheap"),
        ("QUALITY_WEIGHT_HIGH", "1e16"),  # a request's cost would overflow the database's integers
        ("QUALITY_WEIGHT_MEDIUM", "1e20000000"),  # refused at once, not after seconds of arithmetic
        ("QUALITY_WEIGHT_LOW", "1e-5000000"),
        ("DISCORD_GUILD_ID", "my-server"),
        ("DISCORD_GUILD_ID", "²"),  # a digit to str.isdigit, not to int()
        ("DISCORD_GUILD_ID", "99999999999999999999999999"),  # more than a snowflake's 64 bits
        ("DISCORD_GUILD_ID", "9" * 5000),  # more digits than int() reads
        ("ONEMIN_API_URL", "https://api.1min.ai:abc"),
        ("ONEMIN_API_URL", "https://api.1min.ai?x=1"),  # "/api/features" would land after the query
        ("ONEMIN_API_URL", "http://[::1"),
        ("DISCORD_GATEWAY_URL", "wss://gateway.discord.gg:99999"),
        ("DATABASE_URL", "postgresql://user:p@ss:wd@127.0.0.1:5432/db"),  # asyncpg and urlsplit disagree
        ("DATABASE_URL", "mysql://x"),
        ("ONEMIN_API_URL", "api.1min.ai"),
        ("DISCORD_GATEWAY_URL", "http://127.0.0.1:1"),
        ("ONEMIN_API_URL", "https://exa mple.com"),
        ("DISCORD_API_URL", "https://discord.com/api/v10\n/x"),
        ("ONEMIN_API_KEY", "abc\ndef"),  # a header may not hold a line break
        ("DISCORD_TOKEN", "abc def"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).count(variable) == 1, str(caught.value)  # named once: "NAME: what is wrong"
    assert "wd@" not in str(caught.value)  # no piece of a password


def test_values_are_read() -> None:
    settings = load_settings(
        {
            **BASE,
            "DISCORD_GUILD_ID": "123",
            "QUOTA_DEFAULT_CREDITS": "2.5",
            "QUOTA_DEFAULT_PERIOD": "week",
            "GLOBAL_BUDGET_CREDITS": "500",
            "GLOBAL_BUDGET_PERIOD": "month",
            "QUALITY_WEIGHT_LOW": "0.1",
            "MAX_CONCURRENT_JOBS": "64",
            "ONEMIN_API_URL": "http://127.0.0.1:9000/",
        }
    )
    assert settings.guild_id == 123
    assert settings.quota_default == Limit(250, "week")
    assert settings.global_budget == Limit(50000, "month")
    assert settings.quality_weights.low == Fraction(1, 10)
    assert settings.max_concurrent_jobs == 64
    assert settings.onemin_api_url == "http://127.0.0.1:9000"


def test_secrets_stay_out_of_repr() -> None:
    settings = load_settings({"DISCORD_TOKEN": "SECRET-TOKEN", "ONEMIN_API_KEY": "SECRET-KEY"})
    assert "SECRET" not in repr(settings)


@pytest.mark.parametrize("variable", ["DISCORD_TOKEN", "ONEMIN_API_KEY"])
def test_a_secret_with_a_line_break_is_refused_without_repeating_it(variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, variable: "secret-part-one\nsecret-part-two"})
    assert caught.value.variable == variable
    assert "secret-part" not in str(caught.value)
