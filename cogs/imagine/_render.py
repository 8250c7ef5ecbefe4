"""What the bot says about a job: status lines, the result embed and failure sentences."""

from __future__ import annotations

import re
from datetime import datetime

import discord

from imaginebot.credits import credits_text
from imaginebot.delivery import DeliverableImage
from imaginebot.jobs import Delivery, requested_count
from imaginebot.options import ImagineOptions
from imaginebot.periods import discord_timestamp
from imaginebot.store import Job, Refused

# Room left for the prompt in an embed description (Discord allows 4096; escaping can add characters).
PROMPT_ECHO_LIMIT = 3000
NO_PINGS = discord.AllowedMentions.none()


# What Discord's markdown gives a meaning to, each escaped with a backslash (Discord shows "\x" as "x" for any
# punctuation x): the inline marks, "[" (a masked link needs it), and a quote, heading, list or subtext at the start
# of a line. Links are left as they are, so that they still work. discord.utils.escape_markdown does the same but
# matches masked links with "\[.+\]\(.+\)", which backtracks: a 4000-character prompt of "[" and "](" took it
# over a second, on the event loop, each time the prompt was shown. Every branch here is linear.
# The link pattern is discord.py's (discord.utils._URL_REGEX: <link>, http(s):// and steam://), except that a <link>
# may not hold another "<": from each of 4000 "<" its pattern scanned to the end of the text (19 ms).
_LINK = r"(?P<url><[^:<> ]+:\/[^<> ]+>|(?:https?|steam):\/\/[^\s<]+[^<.,:;\"\'\]\s])"
_MARKDOWN = re.compile(rf"{_LINK}|(?P<markdown>[_\\~|*`\[]|^>(?:>>)?\s|^#{{1,3}}|^[ \t]*-)", re.MULTILINE)


def escape_markdown(text: str) -> str:
    """``text`` as Discord shows it literally: its markdown escaped, its links left working."""
    return _MARKDOWN.sub(lambda match: match["url"] or "\\" + match["markdown"], text)


def escaped_prompt(prompt: str, limit: int = PROMPT_ECHO_LIMIT) -> str:
    """The prompt with Discord markdown escaped, cut at a word boundary so the escaped text fits ``limit``."""
    escaped = escape_markdown(prompt)
    if len(escaped) <= limit:
        return escaped
    cut = len(prompt)
    while cut > 0:
        cut = min(cut - 1, int(cut * limit / max(len(escaped), 1)))
        head = prompt[:cut]
        if " " in head[-40:]:
            head = head[: head.rfind(" ")]
        escaped = escape_markdown(head.rstrip()) + " …"
        if len(escaped) <= limit:
            return escaped
    return "…"


def describe(options: ImagineOptions) -> str:
    """``2 images · 1536x1024 · high · png``."""
    images = "1 image" if options.count == 1 else f"{options.count} images"
    return f"{images} · {options.size} · {options.quality} · {options.output_format}"


def queued_status(job: Job, options: ImagineOptions, position: int) -> str:
    """The public status of a waiting job."""
    ahead = "next in line" if position == 0 else f"position {position + 1} in line ({position} ahead)"
    return f"⏳ <@{job.user_id}>'s request is **queued**: {ahead}.\n-# {describe(options)}"


def generating_status(job: Job, options: ImagineOptions, started: datetime) -> str:
    """The public status of a job at the generator; Discord's relative timestamp shows the elapsed time live."""
    return (
        f"🎨 Generating {describe(options)} for <@{job.user_id}>, started {discord_timestamp(started)}.\n"
        "-# GPT Image 2 can take a minute or two, longer at high quality."
    )


def message_link(guild_id: int, channel_id: int, message_id: int) -> str:
    """A link that opens the message in Discord."""
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def posted_in_channel_status(job: Job, options: ImagineOptions, link: str) -> str:
    """The old status of a job whose images went to the channel because its token had expired."""
    return f"✅ <@{job.user_id}>'s images ({describe(options)}) were posted in the channel: {link}"


def rate_limited_status(
    job: Job, options: ImagineOptions, seconds: float, until: datetime, *, out_of_funds: bool = False
) -> str:
    """The public status of a job waiting out the generator's rate limit (``out_of_funds``: it said the bot's
    account has run out of money, which only the bot's operator can fix)."""
    why = (
        "The image service says the bot's account is out of funds (a moderator can tell the bot's operator)"
        if out_of_funds
        else "The image service asked us to slow down"
    )
    return (
        f"⏳ {why}; <@{job.user_id}>'s request ({describe(options)}) "
        f"will be sent again {discord_timestamp(until)}. Nothing is lost and nothing extra is charged."
    )


def result_embed(job: Job, delivery: Delivery, part: int, parts: int) -> discord.Embed:
    """The embed under (or above) the images: prompt, size, quality, cost and time."""
    options = delivery.options
    embed = discord.Embed(description=escaped_prompt(options.prompt), colour=discord.Colour.blurple())
    embed.add_field(name="Size", value=str(options.size))
    embed.add_field(name="Quality", value=options.quality)
    embed.add_field(name="Cost", value=credits_text(job.cost - delivery.refunded))
    embed.add_field(name="Time", value=f"{delivery.generation_seconds:.0f} s")
    embed.add_field(name="Requested by", value=f"<@{job.user_id}>")
    notes = []
    if delivery.missing:
        unsent = delivery.missing - delivery.linked - delivery.lost
        what = []
        if unsent:
            what.append(f"{_images(unsent)} did not come from the generator")
        if delivery.linked:
            what.append(f"{_images(delivery.linked)} could only be linked")
        if delivery.lost:
            what.append(f"{_images(delivery.lost)} could not be fetched")
        listed = ", ".join(what[:-1]) + f" and {what[-1]}" if len(what) > 1 else what[0]
        notes.append(f"Of the {options.count} asked for, {listed}: {credits_text(delivery.refunded)} refunded.")
    notes += [f"Image {image.index + 1}: {image.note}" for group in delivery.groups for image in group if image.note]
    if notes and part == 0:
        embed.add_field(name="Notes", value=_clip("\n".join(notes), 1024), inline=False)
    if parts > 1:
        embed.set_footer(text=f"Part {part + 1} of {parts}")
    return embed


def _images(count: int) -> str:
    return "1 image" if count == 1 else f"{count} images"


def link_lines(images: list[DeliverableImage]) -> str:
    """Lines for images posted as links, with when the link expires."""
    lines = []
    for image in images:
        if image.link is None:
            continue
        expires = f" (link expires {discord_timestamp(image.link_expires_at)})" if image.link_expires_at else ""
        lines.append(f"Image {image.index + 1}: {image.link}{expires}")
    return "\n".join(lines)


def over_quota_message(refused: Refused, cost: int) -> str:
    """Why a request was refused by a limit or budget, what it costs and when the limit resets."""
    left = refused.remaining
    resets = discord_timestamp(refused.resets_at)
    cost_text = f"This request costs {credits_text(cost)}"
    if refused.scope == "member":
        have = f"{cost_text}, but you have {credits_text(left)} left of your {credits_text(refused.limit.credits)} "
        have += f"per {refused.limit.period}."
        if refused.limit.credits <= 0:  # nothing smaller would pass, and waiting does not help
            return f"{have} A moderator can raise your limit (`/quota set`)."
        if left <= 0:
            return f"{have} Your quota resets {resets}; until then, a moderator can raise it (`/quota set`)."
        return f"{have} Your quota resets {resets}. Try fewer images, a smaller size or a lower quality."
    budget = f"{credits_text(refused.limit.credits)} per {refused.limit.period}"
    if refused.scope == "server":
        return (
            f"{cost_text}, but this server's budget of {budget} has only {credits_text(left)} left. It resets "
            f"{resets}; a moderator can raise it (`/quota budget`)."
        )
    return (
        f"{cost_text}, but the bot's overall budget of {budget} has only {credits_text(left)} left. It resets "
        f"{resets}; only the bot's operator can raise it."
    )


def failure_message(job: Job, sentence: str) -> str:
    """A failed job: what went wrong in one sentence, and that nothing was charged."""
    refund = credits_text(job.cost)
    images = "your images" if (requested_count(job) or 1) > 1 else "your image"
    # The sentence may quote the generator's words: shown literally.
    said = escape_markdown(sentence)
    return f"⚠️ <@{job.user_id}>, {images} could not be made. {said}\n-# You were not charged ({refund} refunded)."


def undeliverable_message(job: Job, error: str) -> str:
    """A result that was made but that Discord would not take anywhere; the job is refunded."""
    images = "your images were" if (requested_count(job) or 1) > 1 else "your image was"
    return (
        f"⚠️ <@{job.user_id}>, {images} made, but Discord would not take the upload ({_clip(error, 200)}). "
        f"You were not charged ({credits_text(job.cost)} refunded); please run `/imagine` again."
    )


def partly_delivered_message(job: Job, posted: int, parts: int, error: str) -> str:
    """Part of a result is posted and the rest could not follow; the job is refunded."""
    return (
        f"⚠️ Only part of your result could be posted ({posted} of {parts} messages; Discord said: "
        f"{_clip(error, 200)}). You were not charged ({credits_text(job.cost)} refunded)."
    )


def interrupted_message(job: Job, *, partly_posted: bool = False) -> str:
    """A job cut short by a restart (``partly_posted``: while its result was being posted, part of it is up)."""
    refund = credits_text(job.cost)
    if partly_posted:
        return (
            f"⚠️ <@{job.user_id}>, the bot restarted while your images were being posted, so some may be missing "
            f"here. You were not charged ({refund} refunded); keep what arrived, or run `/imagine` again."
        )
    return (
        f"⚠️ <@{job.user_id}>, the bot restarted while your image was being generated, so it was lost. "
        f"You were not charged ({refund} refunded); please run `/imagine` again."
    )


def log_entry(job: Job, options: ImagineOptions, link: str) -> str:
    """A log-channel line: requester, what was made, a link to the result and the prompt."""
    head = f"🖼️ <@{job.user_id}> generated {describe(options)} in <#{job.channel_id}>"
    head += f" · {link}" if link else ""
    return f"{head}\n>>> {escaped_prompt(options.prompt, 2000 - len(head) - 10)}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
