"""The front door: read the settings, set up logging, build the shared resources once, load the cogs, start."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import logging.handlers
import queue
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands
from dotenv import load_dotenv

from cogs.answering import DISCORD_FAILURES, answered, reply_privately
from cogs.members import NotModerator
from cogs.pacing import IntakePacer, pace_gateway_reading
from imaginebot.config import ConfigError, Settings, load_settings
from imaginebot.generator import GeneratorClient
from imaginebot.jobs import JobService
from imaginebot.policy import Policy
from imaginebot.spool import prepare_spool
from imaginebot.store import Store, open_store

log = logging.getLogger("imaginebot")

EXTENSIONS = ("cogs.imagine", "cogs.quota", "cogs.settings")
COMMANDS_HASH_KEY = "global_commands_hash"
# The server DISCORD_GUILD_ID named when the commands were last synced to one ("" once they were removed from it).
GUILD_COMMANDS_KEY = "guild_commands_server"


class ImagineBot(commands.Bot):
    """The bot: owns the shared HTTP session, the store, the generator client and the job service."""

    session: aiohttp.ClientSession
    store: Store
    generator: GeneratorClient
    policy: Policy
    jobs: JobService
    messenger: object  # cogs.imagine._messenger.JobMessenger, set when the imagine cog loads

    def __init__(self, settings: Settings) -> None:
        # The bot never joins voice: no warnings at every start about voice libraries it does not need.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents(guilds=True),
            # A safety net: every send also names its own allowed mentions.
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
        )
        self.settings = settings
        self._setting_up = False  # set once login reaches setup_hook

    async def login(self, token: str) -> None:
        """Log in (and run ``setup_hook``); Discord unreachable or down says so in one line (``DiscordUnreachable``)."""
        try:
            await super().login(token)
        except (aiohttp.ClientConnectionError, discord.DiscordServerError) as error:
            raise DiscordUnreachable(self.settings.discord_api_url, error) from error
        except TimeoutError as error:
            # setup_hook runs inside login too: a timeout there is the store's, not Discord's.
            if self._setting_up:
                raise
            raise DiscordUnreachable(self.settings.discord_api_url, error) from error

    async def setup_hook(self) -> None:
        """Create the shared resources, load the cogs, sync the commands and settle jobs left by a dead process."""
        self._setting_up = True
        settings = self.settings
        # The connection pool must never cap generations in flight below MAX_CONCURRENT_JOBS (downloads too).
        connector = aiohttp.TCPConnector(limit=max(100, settings.max_concurrent_jobs * 4))
        self.session = aiohttp.ClientSession(connector=connector)
        self.store = open_store(settings.database_url)
        try:
            await self.store.open()
        except Exception as error:  # a path it may not write, a server it cannot reach, a password refused ...
            raise DatabaseUnavailable(settings.database_url, error) from error
        spool = await asyncio.to_thread(prepare_spool)  # and what a process killed outright left there, swept
        self.generator = GeneratorClient(
            self.session,
            api_key=settings.onemin_api_key,
            api_url=settings.onemin_api_url,
            asset_url=settings.onemin_asset_url,
            spool_dir=spool,
        )
        self.policy = Policy(self.store, bot_default=settings.quota_default, global_budget=settings.global_budget)
        self.jobs = JobService(
            store=self.store,
            generator=self.generator,
            policy=self.policy,
            weights=settings.quality_weights,
            max_concurrent=settings.max_concurrent_jobs,
            max_per_member=settings.max_jobs_per_member,
            spool_dir=spool,
        )
        self.tree.on_error = self.on_app_command_error
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()
        await self.jobs.recover()
        tune_garbage_collector()

    async def sync_commands(self) -> None:
        """Guild sync when DISCORD_GUILD_ID is set; otherwise a global sync only when the definitions changed."""
        await self._remove_development_commands(keep=self.settings.guild_id)
        if self.settings.guild_id is not None:
            guild = discord.Object(self.settings.guild_id)
            self.tree.copy_global_to(guild=guild)
            try:
                synced = await self.tree.sync(guild=guild)
            except (discord.Forbidden, discord.NotFound) as error:
                raise GuildUnavailable(self.settings.guild_id, error) from error
            await self.store.set_state(GUILD_COMMANDS_KEY, str(self.settings.guild_id))
            log.info("synced %d commands to server %s", len(synced), self.settings.guild_id)
            return
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        if await self.store.get_state(COMMANDS_HASH_KEY) == digest:
            log.info("commands unchanged since the last global sync; not syncing")
            return
        synced = await self.tree.sync()
        await self.store.set_state(COMMANDS_HASH_KEY, digest)
        log.info("synced %d global commands", len(synced))

    async def _remove_development_commands(self, keep: int | None) -> None:
        """Remove the commands an earlier start synced to another DISCORD_GUILD_ID (or to one now unset): that server
        would show every command twice, its own copy beside the global one."""
        server = await self.store.get_state(GUILD_COMMANDS_KEY)
        if not server or int(server) == keep:
            return
        guild = discord.Object(int(server))
        self.tree.clear_commands(guild=guild)
        try:
            await self.tree.sync(guild=guild)
            log.info("removed the commands synced to server %s while DISCORD_GUILD_ID named it", server)
        except (discord.Forbidden, discord.NotFound):
            log.info("server %s, named by an earlier DISCORD_GUILD_ID, has no commands of ours left to remove", server)
        await self.store.set_state(GUILD_COMMANDS_KEY, "")

    async def on_app_command_error(
        self, interaction: discord.Interaction[ImagineBot], error: app_commands.AppCommandError
    ) -> None:
        """One place for command errors: refusals become short ephemeral messages, the rest is logged."""
        if isinstance(error, NotModerator | app_commands.NoPrivateMessage):
            message = str(error) or "You cannot use this command here."
        elif isinstance(error, app_commands.TransformerError) and error.type == discord.AppCommandOptionType.user:
            # A member option naming someone who has left the server: Discord sends the user without member data.
            message = "That user is not a member of this server (any more); pick someone who is."
        elif isinstance(error, app_commands.CheckFailure):
            message = "You cannot use this command here."
        else:
            log.error("command %s failed", interaction.command and interaction.command.qualified_name, exc_info=error)
            message = "Something went wrong on the bot's side; nothing was charged. Please try again."
        if answered(interaction):  # an error after the member had their answer (the status, say): nothing to add
            return
        try:
            await reply_privately(interaction, message)  # a followup if the command was deferred meanwhile
        except DISCORD_FAILURES:
            log.warning("could not tell the member about an error in %s", interaction.command)

    async def close(self) -> None:
        """Stop the jobs (in-flight ones are settled at the next start), then close what setup_hook opened."""
        if hasattr(self, "jobs"):
            await self.jobs.close()
        await super().close()
        if hasattr(self, "session"):
            await self.session.close()
        if hasattr(self, "store"):
            await self.store.close()


# An interaction's token in a Discord URL (/webhooks/{application}/{token}, /interactions/{id}/{token}/callback):
# for 15 minutes it lets anyone edit or post the bot's answers. aiohttp puts the URL in a failed connection's error.
_INTERACTION_TOKEN_IN_URL = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/?#\s'\"]+")


class DatabaseUnavailable(Exception):
    """The store could not be opened at start: said in one line, naming DATABASE_URL, its password masked."""

    def __init__(self, database_url: str, error: Exception) -> None:
        text = _one_line(error)
        password = urlsplit(database_url).password if "://" in database_url else None
        if password:
            text = text.replace(password, "***")
        super().__init__(f"DATABASE_URL: the database could not be opened ({text})")


class TokenRefused(Exception):
    """Discord refused DISCORD_TOKEN at login: a setting to fix (exit 2), said in one line."""

    def __init__(self) -> None:
        super().__init__("DISCORD_TOKEN: Discord refused the bot token; copy it again from the developer portal")


class GuildUnavailable(Exception):
    """Discord refused the commands' sync to DISCORD_GUILD_ID's server: said in one line, naming the variable."""

    def __init__(self, guild_id: int, error: Exception) -> None:
        super().__init__(
            f"DISCORD_GUILD_ID: Discord refused to sync the commands to server {guild_id} ({_one_line(error)}); "
            "is the bot in that server, invited with the applications.commands scope?"
        )


class DiscordUnreachable(Exception):
    """Discord could not be reached (or answered 5xx) at start: said in one line, naming DISCORD_API_URL."""

    def __init__(self, api_url: str, error: Exception) -> None:
        super().__init__(
            f"Discord could not be reached at {api_url} ({_one_line(error)}); check the network or DISCORD_API_URL"
        )


def _one_line(error: Exception) -> str:
    """An error as the first line of "Type: message" (or its type alone), for a one-line start-up failure."""
    return f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__


class RedactSecrets(logging.Filter):
    """Replace the token, the API key and interaction tokens wherever they would appear in a log line."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = [secret for secret in secrets if secret]

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with the secrets masked."""
        message = record.getMessage()
        masked = _INTERACTION_TOKEN_IN_URL.sub(r"\1[redacted]", message)
        if masked != message or any(secret in masked for secret in self.secrets):
            for secret in self.secrets:
                masked = masked.replace(secret, "[redacted]")
            record.msg, record.args = masked, None
        return True


def setup_logging(settings: Settings) -> logging.handlers.QueueListener:
    """Log to stderr, secrets masked on every record; stop the returned listener at exit to flush it.

    Records are written by a thread of their own (QueueHandler -> QueueListener), so a burst of jobs does not
    make the event loop wait for a write to stderr per log line.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(settings.discord_token, settings.onemin_api_key))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(settings.log_level)
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(settings.log_level)))
    return listener


def tune_garbage_collector() -> None:
    """Make the cyclic garbage collector cheap during a burst (measured with bench/burst.py).

    Everything created during start-up lives as long as the bot: freezing it keeps the collector from walking
    it again and again. A larger young generation means far fewer collections while hundreds of interactions
    are handled at once: in a 500-member burst, one collection of 11-14 ms (at 10,000: 6-7 of them, 20-29 ms in
    all; at the default 700: ~200, ~100 ms more), for at most some tens of thousands of objects in cycles held
    a little longer (a few MB).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def point_discord_at(settings: Settings) -> None:
    """discord.py has no setting for its URLs: set its REST base and gateway from the environment."""
    discord.http.Route.BASE = settings.discord_api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


async def run(bot: ImagineBot, token: str) -> None:
    """Run until SIGTERM (docker stop) or SIGINT (Ctrl+C), then close cleanly."""
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()

    def stop() -> None:
        log.info("stopping: jobs in flight will be settled at the next start")
        stopping.add(loop.create_task(bot.close()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    log.info("event loop: %s", type(loop).__module__.partition(".")[0])
    async with bot:
        await bot.start(token)
        # start() returns once discord.py marks the client closed, before close() has finished with the store.
        await asyncio.gather(*stopping)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency on Linux and macOS), else None: asyncio's own.

    uvloop is asyncio's API with the sockets, transports and timers in C: a burst of interactions, each a few
    HTTP requests, costs the one event loop less CPU, so members further back in a burst are answered sooner.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> int:
    """Run the bot until it is stopped; a bad setting stops it at once with the variable's name."""
    load_dotenv(Path.cwd() / ".env", override=False)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"Cannot start: {error}", file=sys.stderr)
        return 2
    listener = setup_logging(settings)
    point_discord_at(settings)
    pace_gateway_reading(IntakePacer())
    unavailable: DatabaseUnavailable | GuildUnavailable | DiscordUnreachable | TokenRefused | None = None
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(run(ImagineBot(settings), settings.discord_token))
    except discord.LoginFailure:
        unavailable = TokenRefused()
    except (DatabaseUnavailable, GuildUnavailable, DiscordUnreachable) as error:
        unavailable = error
    finally:
        listener.stop()
    if unavailable is not None:  # after the log lines so far, on a line of its own
        print(f"Cannot start: {unavailable}", file=sys.stderr)
        # 2: a setting to fix; 1: a network that may come back (a restart policy tries again).
        return 1 if isinstance(unavailable, DiscordUnreachable) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
