"""The REST API's plumbing (recording, errors, rate-limit headers, spec checks) and its small routes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import DiscordHTTPError, field_errors
from .models import RecordedRequest
from .multipart import RequestBody, read_body

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
RECORD_KEY = web.RequestKey("fake_discord_record", RecordedRequest)
_RATE_LIMIT = "10000"


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer whose Content-Type is exactly `application/json` (discord.py compares it byte for byte)."""
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        headers={"Content-Type": "application/json"},
    )


def no_content() -> web.Response:
    """204."""
    return web.Response(status=204)


def truthy(value: str | None) -> bool:
    """A boolean query parameter (`true`, `True`, `1`)."""
    return (value or "").lower() in ("1", "true")


def route_template(request: web.Request) -> str | None:
    """The matched route as a template relative to the API prefix, e.g. `/channels/{channel_id}/messages`."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    canonical = resource.canonical
    return canonical.removeprefix(API_PREFIX) if canonical.startswith(API_PREFIX) else None


def record_of(request: web.Request) -> RecordedRequest:
    """The recorded request being served."""
    return request[RECORD_KEY]


class RestContext:
    """Shared helpers of the route groups: reading bodies into the record, checking them against the spec."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    async def body(self, request: web.Request) -> RequestBody:
        """Read the body (413 over the request size limit) and keep it in the request's record."""
        body = await read_body(request, self.fake.request_size_limit)
        record = record_of(request)
        record.json = body.json
        record.files = body.files
        return body

    def validate(self, request: web.Request, body: Any) -> None:
        """400 / 50035 when the OpenAPI description rejects the JSON body (or payload_json) of this route."""
        template = route_template(request)
        if template is None:
            return
        seen = self.fake.bodies_seen[request.method, template]
        self.fake.bodies_seen[request.method, template] += 1
        if seen % self.fake.validate_one_in:
            return
        if self.fake.validate_later:
            self.fake.deferred_bodies.append((template, request.method, body))
            return
        errors = self.fake.check_body(template, request.method, body)
        if not errors:
            return
        first = errors[0]
        raise DiscordHTTPError(
            400,
            50035,
            "Invalid Form Body",
            errors=field_errors(first.path, "SPEC_VALIDATION", first.message[:500]),
        )


def build_app(fake: FakeDiscord, route_groups: list[Any]) -> web.Application:
    """The aiohttp application: middleware around the gateway, API and attachment routes."""
    # aiohttp's own cap sits well above the fake's limit, so that the fake answers 413 in Discord's shape.
    client_max_size = max(fake.request_size_limit * 2, 64 * 1024 * 1024)
    app = web.Application(middlewares=[_middleware(fake)], client_max_size=client_max_size)
    app.router.add_get("/gateway", fake.gateway.handle)
    app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", _attachment(fake))
    basics = BasicRoutes(fake)
    basics.add_to(app.router)
    for group in route_groups:
        group.add_to(app.router)
    return app


def _middleware(fake: FakeDiscord) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        record = RecordedRequest(
            method=request.method,
            path=request.path.removeprefix(API_PREFIX),
            query=dict(request.query),
            json=None,
            files=[],
            time=time.monotonic(),
            wall_time=datetime.now(UTC),
            route=route_template(request),
        )
        request[RECORD_KEY] = record
        fake.requests.append(record)
        try:
            _check_authorization(fake, request, record.route)
            limited = _rate_limited(fake, request.method, record.route or record.path)
            if limited is None:
                limited = _failed(fake, request.method, record.route or record.path)
            response = limited if limited is not None else await handler(request)
        except DiscordHTTPError as error:
            if error.problem is not None:
                fake.protocol_errors.append(f"{error.code}: {request.method} {record.path}: {error.problem}")
            response = json_response(error.body(), error.status)
        except web.HTTPException as error:
            # No such route (404) or method (405): a bot calling what Discord lacks, or what the fake lacks.
            fake.protocol_errors.append(f"{error.status}: {request.method} {record.path}: no such route in the fake")
            response = json_response({"message": f"{error.status}: {error.reason}", "code": 0}, error.status)
        record.status = response.status
        if response.status != 429:
            _add_rate_limit_headers(response, record.route or record.path)
        fake.signal.notify()
        await _held(fake, request.method, record.route or record.path)
        return response

    return middleware


def _check_authorization(fake: FakeDiscord, request: web.Request, template: str | None) -> None:
    # Interaction callbacks and webhooks are authorized by their token; everything else needs the bot token.
    if template is not None and (template.startswith("/webhooks/") or template.startswith("/interactions/")):
        return
    if request.headers.get("Authorization") != f"Bot {fake.token}":
        raise DiscordHTTPError(401, 0, "401: Unauthorized", problem="missing or wrong bot token")


def _rate_limited(fake: FakeDiscord, method: str, route: str) -> web.Response | None:
    """The 429 a test asked for with rate_limit_next(), if this request is the next one it matches."""
    for index, (limited_method, prefix, retry_after) in enumerate(fake.pending_rate_limits):
        if limited_method == method and route.startswith(prefix):
            del fake.pending_rate_limits[index]
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
            response = json_response(body, 429)
            response.headers["Retry-After"] = str(max(1, round(retry_after)))
            response.headers["Via"] = "1.1 google"
            _add_rate_limit_headers(response, route)
            response.headers["X-RateLimit-Remaining"] = "0"
            response.headers["X-RateLimit-Reset-After"] = f"{retry_after:.3f}"
            return response
    return None


def _failed(fake: FakeDiscord, method: str, route: str) -> web.Response | None:
    """The error a test asked for with fail_next(), if this request is the next one it matches."""
    for index, (failed_method, prefix, status, code, message) in enumerate(fake.pending_failures):
        if failed_method == method and route.startswith(prefix):
            del fake.pending_failures[index]
            return json_response({"message": message, "code": code}, status)
    return None


async def _held(fake: FakeDiscord, method: str, route: str) -> None:
    """Wait as long as hold_answer_next() asked, if this request is the next one it matches."""
    for index, (held_method, prefix, seconds) in enumerate(fake.pending_holds):
        if held_method == method and route.startswith(prefix):
            del fake.pending_holds[index]
            await asyncio.sleep(seconds)
            return


def _add_rate_limit_headers(response: web.StreamResponse, route: str) -> None:
    # Generous values, so that discord.py never waits; the bucket is stable per route.
    response.headers["X-RateLimit-Limit"] = _RATE_LIMIT
    response.headers["X-RateLimit-Remaining"] = str(int(_RATE_LIMIT) - 1)
    response.headers["X-RateLimit-Reset"] = f"{time.time() + 1:.3f}"
    response.headers["X-RateLimit-Reset-After"] = "1.000"
    response.headers["X-RateLimit-Bucket"] = hashlib.sha1(route.encode()).hexdigest()[:16]
    response.headers["X-RateLimit-Scope"] = "user"


def _attachment(fake: FakeDiscord) -> Any:
    async def serve(request: web.Request) -> web.Response:
        attachment = fake.find_attachment(int(request.match_info["attachment_id"]))
        if attachment is None:
            raise web.HTTPNotFound()
        return web.Response(body=attachment.data, content_type=attachment.content_type or "application/octet-stream")

    return serve


class BasicRoutes:
    """Identity, gateway discovery and application command routes."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.context = RestContext(fake)

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Register the routes."""
        p = API_PREFIX
        router.add_get(f"{p}/gateway", self.gateway)
        router.add_get(f"{p}/gateway/bot", self.gateway_bot)
        router.add_get(f"{p}/users/@me", self.me)
        router.add_get(f"{p}/users/{{user_id}}", self.user)
        router.add_get(f"{p}/guilds/{{guild_id}}/members/{{user_id}}", self.member)
        router.add_get(f"{p}/oauth2/applications/@me", self.application)
        router.add_get(f"{p}/applications/@me", self.application)
        router.add_get(f"{p}/applications/{{application_id}}/commands", self.get_commands)
        router.add_put(f"{p}/applications/{{application_id}}/commands", self.put_commands)
        router.add_get(f"{p}/applications/{{application_id}}/guilds/{{guild_id}}/commands", self.get_commands)
        router.add_put(f"{p}/applications/{{application_id}}/guilds/{{guild_id}}/commands", self.put_commands)

    async def gateway(self, request: web.Request) -> web.Response:
        """GET /gateway."""
        return json_response({"url": self.fake.gateway_url})

    async def gateway_bot(self, request: web.Request) -> web.Response:
        """GET /gateway/bot."""
        limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
        return json_response({"url": self.fake.gateway_url, "shards": 1, "session_start_limit": limit})

    async def me(self, request: web.Request) -> web.Response:
        """GET /users/@me: the bot user."""
        return json_response(self.fake.bot_user_payload())

    async def user(self, request: web.Request) -> web.Response:
        """GET /users/{id}: a member of any guild, or the bot."""
        user_id = int(request.match_info["user_id"])
        if user_id == self.fake.bot_user_id:
            return json_response(self.fake.bot_user_payload())
        member = self.fake.member_by_id(user_id)
        if member is None:
            raise DiscordHTTPError(404, 10013, "Unknown User", problem=f"unknown user {user_id}")
        return json_response(member.user_payload())

    async def member(self, request: web.Request) -> web.Response:
        """GET /guilds/{id}/members/{id}."""
        guild = self.fake.guild_by_id(int(request.match_info["guild_id"]))
        if guild is None:
            raise DiscordHTTPError(404, 10004, "Unknown Guild", problem="unknown guild")
        user_id = int(request.match_info["user_id"])
        if user_id == self.fake.bot_user_id:
            return json_response(guild.bot_member_payload(self.fake.bot_user_id, self.fake.bot_name))
        member = next((m for m in guild.members if m.id == user_id), None)
        if member is None:
            raise DiscordHTTPError(404, 10007, "Unknown Member", problem=f"unknown member {user_id}")
        return json_response(member.to_payload())

    async def application(self, request: web.Request) -> web.Response:
        """GET /oauth2/applications/@me and /applications/@me."""
        return json_response(self.fake.application_payload())

    def _scope(self, request: web.Request) -> int | None:
        if int(request.match_info["application_id"]) != self.fake.application_id:
            raise DiscordHTTPError(403, 50001, "Missing Access", problem="commands of another application")
        if "guild_id" not in request.match_info:
            return None
        guild_id = int(request.match_info["guild_id"])
        if self.fake.guild_by_id(guild_id) is None:
            raise DiscordHTTPError(403, 50001, "Missing Access", problem=f"commands of guild {guild_id}, not joined")
        return guild_id

    async def get_commands(self, request: web.Request) -> web.Response:
        """GET the commands of a scope."""
        return json_response(self.fake.registry.listing(self._scope(request)))

    async def put_commands(self, request: web.Request) -> web.Response:
        """PUT (bulk overwrite) the commands of a scope."""
        body = await self.context.body(request)
        scope = self._scope(request)
        self.context.validate(request, body.json)
        stored = self.fake.registry.bulk_overwrite(scope, body.json or [])
        return json_response(stored)
