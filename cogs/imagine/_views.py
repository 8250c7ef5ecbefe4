"""Buttons that outlive the process: their state is the job id in the custom_id; the job table has the rest."""

from __future__ import annotations

import re
from typing import Any

import discord

Interaction = discord.Interaction["ImagineBot"]


class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"imagine:base:(?P<job_id>[0-9]{1,20})"):
    """A button whose custom_id is ``imagine:<action>:<job id>``."""

    action: str = ""
    label: str = ""
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(label=self.label, style=self.style, custom_id=f"imagine:{self.action}:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> _JobButton:
        """Rebuild the button from a click (also after a restart)."""
        return cls(int(match["job_id"]))


class CancelButton(_JobButton, template=r"imagine:cancel:(?P<job_id>[0-9]{1,20})"):
    """Under a queued job's status: the requester or a moderator cancels it and gets the credits back."""

    action = "cancel"
    label = "Cancel"
    style = discord.ButtonStyle.danger

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Cancel the job."""
        from cogs.imagine import _actions

        await _actions.cancel(interaction, self.job_id)


class RerollButton(_JobButton, template=r"imagine:reroll:(?P<job_id>[0-9]{1,20})"):
    """Same options again, as a new job charged to whoever clicks."""

    action = "reroll"
    label = "Re-roll"
    style = discord.ButtonStyle.primary

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Start the new job."""
        from cogs.imagine import _actions

        await _actions.reroll(interaction, self.job_id)


class EditRerollButton(_JobButton, template=r"imagine:edit:(?P<job_id>[0-9]{1,20})"):
    """Opens a modal with the prompt prefilled; the submitted prompt runs as a new job."""

    action = "edit"
    label = "Edit & re-roll"

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Open the modal."""
        from cogs.imagine import _actions

        await _actions.open_edit_modal(interaction, self.job_id)


class DeleteButton(_JobButton, template=r"imagine:delete:(?P<job_id>[0-9]{1,20})"):
    """The requester or a moderator removes the result."""

    action = "delete"
    label = "Delete"
    style = discord.ButtonStyle.danger

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        """Delete the result message."""
        from cogs.imagine import _actions

        await _actions.delete(interaction, self.job_id)


DYNAMIC_ITEMS: tuple[type[_JobButton], ...] = (CancelButton, RerollButton, EditRerollButton, DeleteButton)


def result_view(job_id: int) -> discord.ui.View:
    """The buttons under delivered images."""
    view = discord.ui.View(timeout=None)
    for button in (RerollButton, EditRerollButton, DeleteButton):
        view.add_item(button(job_id))
    return view


# The modal is answered through the bot's interaction listener (see _actions.handle_modal), not a Modal object kept
# in memory, so a modal opened before a restart still works after it.
EDIT_MODAL_PREFIX = "imagine:editmodal:"
EDIT_MODAL_PROMPT_ID = "prompt"


class EditPromptModal(discord.ui.Modal):
    """The Edit & re-roll modal: one paragraph input prefilled with the prompt."""

    def __init__(self, job_id: int, prompt: str) -> None:
        super().__init__(title="Edit & re-roll", custom_id=f"{EDIT_MODAL_PREFIX}{job_id}", timeout=900)
        self.add_item(
            discord.ui.TextInput(
                label="Prompt",
                custom_id=EDIT_MODAL_PROMPT_ID,
                style=discord.TextStyle.paragraph,
                default=prompt[:4000],
                min_length=1,
                max_length=4000,
            )
        )
