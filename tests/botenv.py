"""How tests run the real bot process: where it lives and the environment variables the contract names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BOT_TOKEN = "fake-bot-token-that-must-never-be-logged"
API_KEY = "onemin-key-that-must-never-be-logged"

# Every variable the contract names, so an operator's .env in the repo cannot leak into a test (empty = unset).
CONTRACT_VARIABLES = (
    "DISCORD_TOKEN",
    "ONEMIN_API_KEY",
    "ONEMIN_API_URL",
    "ONEMIN_ASSET_URL",
    "DISCORD_API_URL",
    "DISCORD_GATEWAY_URL",
    "DATABASE_URL",
    "DISCORD_GUILD_ID",
    "QUALITY_WEIGHT_LOW",
    "QUALITY_WEIGHT_MEDIUM",
    "QUALITY_WEIGHT_HIGH",
    "QUOTA_DEFAULT_CREDITS",
    "QUOTA_DEFAULT_PERIOD",
    "GLOBAL_BUDGET_CREDITS",
    "GLOBAL_BUDGET_PERIOD",
    "MAX_CONCURRENT_JOBS",
    "MAX_JOBS_PER_MEMBER",
)


def bot_environment(discord: Any, onemin: Any, database: Path, **overrides: str) -> dict[str, str]:
    """The bot's environment pointed at a fake Discord and a fake 1min.ai, with its own SQLite file.

    Every contract variable is set (empty = unset), so an operator's .env in the repository cannot leak in.
    """
    env = {key: value for key, value in os.environ.items() if key not in CONTRACT_VARIABLES}
    env.update({key: "" for key in CONTRACT_VARIABLES})
    env.update(
        DISCORD_TOKEN=BOT_TOKEN,
        ONEMIN_API_KEY=API_KEY,
        ONEMIN_API_URL=onemin.api_url,
        ONEMIN_ASSET_URL=onemin.asset_url,
        DISCORD_API_URL=discord.api_url,
        DISCORD_GATEWAY_URL=discord.gateway_url,
        DATABASE_URL=f"sqlite:///{database}",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env
