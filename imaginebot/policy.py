"""Who may spend how much: a member's resolved limit and the budgets above it, with each server's settings cached."""

from __future__ import annotations

from collections.abc import Iterable

from imaginebot.limits import Limit, ResolvedLimit, resolve_member_limit
from imaginebot.store import BudgetCheck, GuildSettings, Store


class Policy:
    """Reads limits and settings through the store, caching them (one bot process owns the database for now).

    Moderator commands change them through the store and then call ``forget`` so the next request sees the change.
    """

    def __init__(self, store: Store, *, bot_default: Limit, global_budget: Limit | None) -> None:
        self.store = store
        self.bot_default = bot_default
        self.global_budget = global_budget
        self._settings: dict[int, GuildSettings] = {}
        # A server's member limits, loaded with one query the first time one of its members asks.
        self._member_limits: dict[int, dict[int, Limit]] = {}
        # Bumped by ``forget``: a read that began before a change and ends after it must not be cached (a pooled
        # PostgreSQL connection can return the old row after the change was committed on another).
        self._generation: dict[int, int] = {}

    async def settings(self, guild_id: int) -> GuildSettings:
        """The server's settings (cached)."""
        cached = self._settings.get(guild_id)
        if cached is None:
            generation = self._generation.get(guild_id, 0)
            cached = await self.store.get_guild_settings(guild_id)
            if self._generation.get(guild_id, 0) == generation:
                self._settings[guild_id] = cached
        return cached

    async def member_limit(self, guild_id: int, user_id: int) -> Limit | None:
        """The member's own limit, if a moderator set one (cached)."""
        limits = self._member_limits.get(guild_id)
        if limits is None:
            generation = self._generation.get(guild_id, 0)
            limits = await self.store.member_limits(guild_id)
            if self._generation.get(guild_id, 0) == generation:
                self._member_limits[guild_id] = limits
        return limits.get(user_id)

    async def resolve(self, guild_id: int, user_id: int, role_ids: Iterable[int]) -> ResolvedLimit:
        """The member's limit and where it comes from."""
        settings = await self.settings(guild_id)
        return resolve_member_limit(
            member_limit=await self.member_limit(guild_id, user_id),
            member_role_ids=role_ids,
            role_limits=settings.role_limits,
            exempt_role_ids=settings.exempt_role_ids,
            server_default=settings.default_limit,
            bot_default=self.bot_default,
        )

    async def checks(self, guild_id: int, user_id: int, role_ids: Iterable[int]) -> list[BudgetCheck]:
        """Every limit a request by this member must fit, in the order a refusal is reported."""
        resolved = await self.resolve(guild_id, user_id, role_ids)
        settings = await self.settings(guild_id)
        checks: list[BudgetCheck] = []
        if resolved.limit is not None:
            checks.append(BudgetCheck("member", resolved.limit))
        if settings.budget is not None:
            checks.append(BudgetCheck("server", settings.budget))
        if self.global_budget is not None:
            checks.append(BudgetCheck("global", self.global_budget))
        return checks

    def forget(self, guild_id: int) -> None:
        """Drop a server's cached settings and member limits after a moderator changed them."""
        self._settings.pop(guild_id, None)
        self._member_limits.pop(guild_id, None)
        self._generation[guild_id] = self._generation.get(guild_id, 0) + 1
