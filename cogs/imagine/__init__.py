"""``/imagine``: a member's prompt in, GPT Image 2 pictures out, paid from their quota."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.imagine._actions import handle_modal
from cogs.imagine._messenger import JobMessenger
from cogs.imagine._submit import accept, answered_in_time, options_from_member
from cogs.imagine._views import DYNAMIC_ITEMS
from imaginebot.sizes import autocomplete_sizes

if TYPE_CHECKING:
    from bot import ImagineBot

log = logging.getLogger(__name__)


class Imagine(commands.Cog):
    """The image command and the life of its jobs on Discord."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        """Wire the job service to Discord and make old buttons work again."""
        self.bot.messenger = JobMessenger(self.bot)
        self.bot.jobs.events = self.bot.messenger
        self.bot.add_dynamic_items(*DYNAMIC_ITEMS)

    @app_commands.command(name="imagine")
    @app_commands.guild_only()
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    @app_commands.rename(output_format="format")
    @app_commands.describe(
        prompt="What to draw, in words (up to 4000 characters)",
        size="Width x height in pixels, e.g. 1536x1024 (both multiples of 16); start typing for suggestions",
        quality="low is fast and cheap, high the most detailed and costly (default: medium, or the server's)",
        count="How many images, 1 to 10 (each one costs)",
        background="auto lets the model choose; opaque forces a solid background",
        output_format="File format of the images",
        compression="0-100, only for jpeg or webp: higher keeps more quality",
    )
    async def imagine(
        self,
        interaction: discord.Interaction[ImagineBot],
        prompt: app_commands.Range[str, 1, 4000],
        size: app_commands.Range[str, 1, 40] | None = None,
        quality: Literal["low", "medium", "high"] | None = None,
        count: app_commands.Range[int, 1, 10] | None = None,
        background: Literal["auto", "opaque"] | None = None,
        output_format: Literal["png", "jpeg", "webp"] | None = None,
        compression: app_commands.Range[int, 0, 100] | None = None,
    ) -> None:
        """Generate images with GPT Image 2 from a prompt."""
        async with answered_in_time(interaction):
            options = await options_from_member(
                interaction,
                prompt=prompt,
                size=size,
                quality=quality,
                count=count,
                background=background,
                output_format=output_format,
                compression=compression,
            )
            if options is not None:
                await accept(interaction, options)

    @imagine.autocomplete("size")
    async def size_autocomplete(
        self, interaction: discord.Interaction[ImagineBot], current: str
    ) -> list[app_commands.Choice[str]]:
        """Presets and valid completions of what the member has typed so far (no I/O)."""
        return [app_commands.Choice(name=name, value=value) for name, value in autocomplete_sizes(current)]

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[ImagineBot]) -> None:
        """Edit & re-roll modals are answered here so they survive a restart."""
        if interaction.type is discord.InteractionType.modal_submit and not interaction.response.is_done():
            await handle_modal(interaction)


async def setup(bot: ImagineBot) -> None:
    """discord.py extension entry point."""
    await bot.add_cog(Imagine(bot))
