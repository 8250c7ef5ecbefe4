"""How tests run the real bot process: where it lives and the environment variables the contract names."""

from __future__ import annotations

from pathlib import Path

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
