"""Which mentions in a message's content would notify someone, given the allowed_mentions the bot sent."""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_EVERYONE = re.compile(r"@(everyone|here)\b")


def would_ping(content: str, allowed_mentions: dict[str, Any] | None) -> set[str]:
    """Return the mentions in `content` that Discord would notify.

    Without allowed_mentions every mention in the content pings. With it, `parse` lists the kinds that ping
    ("everyone" covers @everyone and @here), and `users`/`roles` name the ids that ping. Results are written
    "@everyone", "@here", "<@USER_ID>" and "<@&ROLE_ID>".
    """
    users = {m.group(1) for m in _USER.finditer(content)}
    roles = {m.group(1) for m in _ROLE.finditer(content)}
    broadcasts = {"@" + m.group(1) for m in _EVERYONE.finditer(content)}
    if allowed_mentions is None:
        return broadcasts | {f"<@{u}>" for u in users} | {f"<@&{r}>" for r in roles}

    parse = set(allowed_mentions.get("parse") or ())
    allowed_users = {str(u) for u in allowed_mentions.get("users") or ()}
    allowed_roles = {str(r) for r in allowed_mentions.get("roles") or ()}
    pinged: set[str] = set()
    if "everyone" in parse:
        pinged |= broadcasts
    pinged |= {f"<@{u}>" for u in users if "users" in parse or u in allowed_users}
    pinged |= {f"<@&{r}>" for r in roles if "roles" in parse or r in allowed_roles}
    return pinged
