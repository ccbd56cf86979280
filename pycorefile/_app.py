"""Loading a Corefile into a configuration, and running it with signals and reload."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from ._config import Config, build_config
from ._registry import Registry
from ._server import Server, ServerOptions
from ._version import __version__
from .corefile import CorefileError, ServerBlock, parse_corefile
from .plugin import RELOADER_KEY, Plugin, StartupError

log = logging.getLogger("pycorefile")

DEFAULT_COREFILE = ".:{port} {{\n    whoami\n    log\n}}\n"

Parse = Callable[[str, str], list[ServerBlock]]
"""Corefile text and file name to blocks: ``parse_corefile`` or ``parse_corefile_apart``."""


@dataclass
class Source:
    """Where the Corefile comes from: a path, standard input, or the built-in default."""

    path: str | None
    """None for the built-in default; ``stdin`` for standard input."""
    text: str
    filename: str

    @classmethod
    def read(cls, conf: str | None, dns_port: int) -> Source:
        if conf == "stdin":
            return cls("stdin", sys.stdin.read(), "stdin")
        path = conf if conf is not None else "Corefile"
        if conf is None and not os.path.exists(path):
            return cls(None, DEFAULT_COREFILE.format(port=dns_port), "Corefile")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            raise CorefileError(f"cannot read Corefile: {exc.strerror}", path, 0, 0) from None
        return cls(path, text, path)

    def reread(self, dns_port: int) -> Source:
        if self.path in (None, "stdin"):
            return self
        return Source.read(self.path, dns_port)


def load_config(
    text: str,
    filename: str = "Corefile",
    *,
    registry: Registry | None = None,
    dns_port: int = 53,
    shared: dict[str, object] | None = None,
    parse: Parse = parse_corefile,
    plugins: Mapping[str, type[Plugin]] | None = None,
) -> Config:
    """Parse and set up a Corefile; raise CorefileError with its location on any mistake.

    ``plugins`` adds plugin classes that are not installed as entry points
    (``{"rename": RenamePlugin}``: directive name to class), placed in the
    chain by their ``before``/``after`` attributes; a name already installed
    is replaced.
    """
    blocks = parse(text, filename)
    registry = registry or default_registry()
    if plugins:
        registry = registry.with_classes(plugins)
    return build_config(
        blocks,
        registry,
        corefile=filename,
        dns_port=dns_port,
        shared=shared,
    )


_REGISTRY: Registry | None = None


def default_registry() -> Registry:
    """The plugins installed in this environment (read once)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry.discover()
    return _REGISTRY


def config_files(config: Config) -> list[str]:
    """The Corefile and every file it imported, for change detection."""
    files = {config.corefile}
    for block in config.blocks:
        files.add(block.block.file)
        for d in block.block.directives:
            files.add(d.file)
    return sorted(f for f in files if os.path.isfile(f))


class Runner:
    """A running server and how it reloads: what the CLI, signals and ``reload`` share."""

    def __init__(
        self,
        source: Source,
        *,
        registry: Registry | None = None,
        dns_port: int = 53,
        options: ServerOptions | None = None,
        parse: Parse = parse_corefile,
    ) -> None:
        self.source = source
        self.parse = parse
        """How Corefiles are parsed: in this process, or apart (the command line)."""
        self.registry = registry or default_registry()
        self.dns_port = dns_port
        self.server = Server(options)
        self.reloads = 0
        self.reload_failures = 0
        self.serving = False
        """True once the server has started: a failure after that is not a failed start."""
        self._reloading = trio.Lock()
        """One reload at a time (SIGUSR1 and the reload plugin may ask together)."""

    def build(self, source: Source) -> Config:
        config = load_config(
            source.text,
            source.filename,
            registry=self.registry,
            dns_port=self.dns_port,
            shared={RELOADER_KEY: self},
            parse=self.parse,
        )
        return config

    # -- The Reloader a plugin sees (SetupContext.reloader) ------------------------

    def files(self) -> list[str]:
        """The Corefile and every file it imports, as served (the Corefile alone before)."""
        served = config_files(self.server.config) if self.server.config else []
        return served or ([self.source.path] if self.source.path else [])

    def read_corefile(self) -> list[ServerBlock]:
        """The Corefile as it is on disk now, parsed (blocking: files and a child process)."""
        source = self.source.reread(self.dns_port)
        return self.parse(source.text, source.filename)

    def serves(self, plugin: Plugin) -> bool:
        """True while ``plugin`` belongs to the configuration being served."""
        current = self.server.config
        return current is None or any(p is plugin for p in current.plugins)

    async def build_again(self) -> tuple[Source, Config]:
        """Read the Corefile again and build it, in a worker thread.

        This waits on files and processes: the Corefile is read and parsed
        (in a child process from the command line, 0.2-0.5 s; a large import
        takes longer), and plugins read their files at setup (resolv.conf,
        state files). In a thread the event loop keeps answering meanwhile;
        setups only read the running configuration (counters and services
        they take over).
        """

        def build_from_disk() -> tuple[Source, Config]:
            source = self.source.reread(self.dns_port)
            return source, self.build(source)

        return await trio.to_thread.run_sync(build_from_disk)

    async def reload(self, reason: str = "SIGUSR1") -> bool:
        """Build the Corefile anew and swap it in; a broken one keeps the old serving."""
        async with self._reloading:
            try:
                source, config = await self.build_again()
                await self.server.reload(config)
            except Exception as exc:
                problem = user_facing(exc)
                if problem is None:
                    raise
                self.reload_failures += 1
                log.error("%s: %s", reason, problem)
                return False
            self.source = source
            self.reloads += 1
        log.info("Reloading complete")
        return True

    async def run(
        self,
        config: Config,
        *,
        quiet: bool = False,
        pidfile: str | None = None,
        task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``config`` until SIGTERM or SIGINT; reload on SIGUSR1; ignore SIGHUP."""
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)
        with trio.open_signal_receiver(*signals) as received:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.server.serve, config)
                if not quiet:
                    print_banner(self.server)
                if pidfile:
                    await trio.to_thread.run_sync(write_pidfile, pidfile)
                self.serving = True
                task_status.started(self.server)
                try:
                    async for signum in received:
                        if signum == signal.SIGUSR1:
                            await self.reload()
                        elif signum in (signal.SIGTERM, signal.SIGINT):
                            name = signal.Signals(signum).name
                            log.info("%s: Shutting down servers then terminating", name)
                            self.server.stop()
                            break
                finally:
                    if pidfile:
                        with contextlib.suppress(OSError):
                            os.unlink(pidfile)


def write_pidfile(path: str) -> None:
    """Write our PID atomically: a reader sees no file or the whole line, never an empty one."""
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(partial, path)


def user_facing(exc: BaseException) -> BaseException | None:
    """The error to show the user (bad Corefile, address in use, a plugin that
    could not start), unwrapped from trio's exception groups; None for a bug."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [user_facing(e) for e in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
        return None
    if isinstance(exc, CorefileError | OSError | StartupError):
        return exc
    return None


def banner_lines(server: Server) -> list[str]:
    """The startup listing: each served zone and port, as CoreDNS prints it."""
    lines = set()
    for (transport, host, _port), lst in server.listeners.items():
        port = lst.addresses[0][2] if lst.addresses else _port
        prefix = "" if transport == "dns" else f"{transport}://"
        where = f" on {host}" if host else ""
        for route in lst.dispatcher.routes.values():
            lines.add(f"{prefix}{route.zone}:{port}{where}")
    return sorted(lines)


def version_lines() -> list[str]:
    return [
        f"pycorefile-{__version__}",
        f"{sys.platform}/{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
    ]


def print_banner(server: Server) -> None:
    for line in banner_lines(server) + version_lines():
        print(line)
    sys.stdout.flush()


@asynccontextmanager
async def open_server(
    corefile: str,
    *,
    dns_port: int = 0,
    registry: Registry | None = None,
    filename: str = "Corefile",
    options: ServerOptions | None = None,
    plugins: Mapping[str, type[Plugin]] | None = None,
) -> AsyncIterator[Server]:
    """Serve a Corefile's text for the duration of the block (tests, embedding).

    Keys without a port get ``dns_port``; 0 picks a free port, shared by the
    UDP and TCP sockets (``server.port()`` tells which). ``plugins`` adds
    plugin classes that are not installed, as in ``load_config``.
    """
    config = await trio.to_thread.run_sync(
        partial(
            load_config, corefile, filename, registry=registry, dns_port=dns_port, plugins=plugins
        )
    )
    server = Server(options)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, config)
        try:
            yield server
        finally:
            server.stop()
