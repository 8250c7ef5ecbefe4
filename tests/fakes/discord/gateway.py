"""The gateway websocket (at /gateway): HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats, dispatches.

Frames are plain TEXT JSON whatever `compress` the client asked for: discord.py only decompresses binary frames
(DiscordWebSocket.received_message), so text is always understood.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any, Protocol

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 0, 1, 2, 6, 8, 9, 10, 11
HEARTBEAT_INTERVAL_MS = 41_250
# Discord's answer to a heartbeat takes a network round trip. An instant one on loopback can arrive before
# discord.py's heartbeat thread has noted when it sent, and it then logs "Can't keep up ... 41.2s behind".
HEARTBEAT_ACK_DELAY = 0.02
GUILD_MEMBERS_INTENT = 1 << 1
AUTHENTICATION_FAILED = 4004


class GatewayWorld(Protocol):
    """What the gateway needs to know about the fake's world."""

    token: str

    def ready_payload(self, session_id: str, shard: list[int] | None) -> dict[str, Any]:
        """The `d` of READY."""
        ...

    def guild_payloads(self, *, with_members: bool) -> list[dict[str, Any]]:
        """The `d` of each GUILD_CREATE sent after READY."""
        ...

    def member_payloads(self, guild_id: int) -> list[dict[str, Any]]:
        """Every member of a guild, for GUILD_MEMBERS_CHUNK."""
        ...

    def gateway_changed(self) -> None:
        """A bot identified or left: wake whoever waits on it."""
        ...


class GatewaySession:
    """One websocket connection from a bot."""

    def __init__(self, ws: web.WebSocketResponse, query: dict[str, str]) -> None:
        self.ws = ws
        self.query = query
        self.session_id: str | None = None
        self.intents = 0
        self.sequence = 0
        self._send_lock = asyncio.Lock()

    @property
    def identified(self) -> bool:
        """Whether the bot identified on this connection."""
        return self.session_id is not None

    async def send(self, op: int, d: Any, event: str | None = None) -> None:
        """Send one gateway payload as a TEXT frame."""
        async with self._send_lock:
            payload: dict[str, Any] = {"op": op, "d": d, "s": None, "t": None}
            if op == DISPATCH:
                self.sequence += 1
                payload["s"] = self.sequence
                payload["t"] = event
            await self.ws.send_str(json.dumps(payload, separators=(",", ":")))


class Gateway:
    """The gateway endpoint. Interactions go to the connection on which a bot last identified."""

    def __init__(self, world: GatewayWorld) -> None:
        self.world = world
        self.sessions: list[GatewaySession] = []
        self.current: GatewaySession | None = None
        self.ready = asyncio.Event()
        self.connections: list[dict[str, str]] = []  # query of each connection (v, encoding, compress)
        self.identify_count = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Serve one bot connection until it closes."""
        # A short close timeout: a bot that died or hung must not hold up disconnect_bot() or close().
        ws = web.WebSocketResponse(max_msg_size=0, timeout=2.0)
        await ws.prepare(request)
        query = dict(request.query)
        self.connections.append(query)
        session = GatewaySession(ws, query)
        self.sessions.append(session)
        log.debug("gateway connection %s", query)
        try:
            await session.send(HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "_trace": ["fake-discord"]})
            async for message in ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                await self._receive(session, json.loads(message.data))
        finally:
            self.sessions.remove(session)
            if self.current is session:
                self.current = None
                self.ready.clear()
            self.world.gateway_changed()
        return ws

    async def _receive(self, session: GatewaySession, payload: dict[str, Any]) -> None:
        op, d = payload.get("op"), payload.get("d")
        if op == HEARTBEAT:
            await asyncio.sleep(HEARTBEAT_ACK_DELAY)
            await session.send(HEARTBEAT_ACK, None)
        elif op == IDENTIFY:
            await self._identify(session, d or {})
        elif op == RESUME:
            # Sessions are not kept: make the client identify afresh.
            await session.send(INVALID_SESSION, False)
        elif op == REQUEST_MEMBERS:
            await self._send_members(session, d or {})
        else:
            log.debug("gateway op %s ignored", op)

    async def _identify(self, session: GatewaySession, d: dict[str, Any]) -> None:
        if d.get("token") != self.world.token:
            log.warning("gateway IDENTIFY with a wrong token")
            await session.ws.close(code=AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return
        session.session_id = uuid.uuid4().hex
        session.intents = int(d.get("intents") or 0)
        self.identify_count += 1
        await session.send(DISPATCH, self.world.ready_payload(session.session_id, d.get("shard")), "READY")
        with_members = bool(session.intents & GUILD_MEMBERS_INTENT)
        for guild in self.world.guild_payloads(with_members=with_members):
            await session.send(DISPATCH, guild, "GUILD_CREATE")
        self.current = session
        self.ready.set()
        self.world.gateway_changed()

    async def _send_members(self, session: GatewaySession, d: dict[str, Any]) -> None:
        guild_id = int(d["guild_id"])
        members = self.world.member_payloads(guild_id)
        query = d.get("query")
        if query:
            members = [m for m in members if m["user"]["username"].startswith(query)]
        user_ids = d.get("user_ids")
        if user_ids:
            wanted = {str(u) for u in ([user_ids] if isinstance(user_ids, int | str) else user_ids)}
            members = [m for m in members if m["user"]["id"] in wanted]
        if d.get("limit"):
            members = members[: int(d["limit"])]
        chunk: dict[str, Any] = {
            "guild_id": str(guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await session.send(DISPATCH, chunk, "GUILD_MEMBERS_CHUNK")

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to the connected bot; RuntimeError when no bot has identified."""
        if self.current is None:
            raise RuntimeError(f"cannot send {event}: no bot is connected to the fake gateway")
        await self.current.send(DISPATCH, data, event)

    async def dispatch_if_connected(self, event: str, data: dict[str, Any]) -> None:
        """Send an event if a bot is connected (world changes made before it connects reach it in GUILD_CREATE)."""
        if self.current is not None:
            await self.current.send(DISPATCH, data, event)

    async def disconnect(self, code: int = 4000) -> None:
        """Drop every bot connection; 4000 lets discord.py reconnect (it resumes, is refused, identifies)."""
        self.current = None
        self.ready.clear()
        for session in list(self.sessions):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await session.ws.close(code=code, message=b"Disconnected by the test.")
        self.world.gateway_changed()
