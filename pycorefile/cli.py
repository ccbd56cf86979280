"""The ``pycorefile`` command: CoreDNS's flags, with the same meaning."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from functools import partial
from typing import TextIO

import trio

from ._app import Runner, Source, default_registry, user_facing, version_lines
from ._config import Config, describe
from ._conn import MAX_CONNECTIONS, raise_open_file_limit
from ._registry import RegistryError
from ._server import MAX_IN_FLIGHT, ServerOptions
from ._workers import Supervisor
from .corefile import CorefileError, blocks_to_json, parse_corefile, parse_corefile_apart

log = logging.getLogger("pycorefile")

SWITCH_INTERVAL = 0.0005
"""Seconds a thread holding the GIL runs before another thread waiting for it gets it
(Python's default: 0.005). The event loop gives the GIL up at every socket call; while a
worker thread computes (a mesh table or a configuration being built), each call then
waits up to this long to get it back, so with the default a burst of 256 datagrams
(512 calls) could stall answers for seconds."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pycorefile",
        description="A CoreDNS-compatible DNS server driven by a Corefile.",
        allow_abbrev=False,
    )
    p.add_argument(
        "-conf",
        "--conf",
        metavar="FILE",
        default=None,
        help="Corefile to load (default ./Corefile; 'stdin' reads standard input)",
    )
    p.add_argument(
        "-dns.port",
        "--dns.port",
        "-p",
        dest="port",
        type=int,
        default=53,
        metavar="PORT",
        help="default port for keys without one (default 53)",
    )
    p.add_argument(
        "-plugins",
        "--plugins",
        action="store_true",
        help="list the registered plugins in chain order and exit",
    )
    p.add_argument("-version", "--version", action="store_true", help="show version and exit")
    p.add_argument(
        "-quiet",
        "--quiet",
        action="store_true",
        help="do not print the startup listing and version",
    )
    p.add_argument("-pidfile", "--pidfile", metavar="FILE", help="write the process ID here")
    p.add_argument(
        "-validate",
        "--validate",
        action="store_true",
        help="check the Corefile completely without serving, print the chains",
    )
    p.add_argument(
        "-dump",
        "--dump",
        action="store_true",
        help="print the parsed Corefile as JSON (syntax only) and exit",
    )
    p.add_argument(
        "-allocations",
        "--allocations",
        action="store_true",
        help="print the autoalloc table of the Corefile's state and exit",
    )
    p.add_argument(
        "-workers",
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve with N processes sharing the DNS ports (SO_REUSEPORT)",
    )
    p.add_argument(
        "-max-connections",
        "--max-connections",
        dest="max_connections",
        type=_positive,
        default=MAX_CONNECTIONS,
        metavar="N",
        help=f"TCP connections (DNS and HTTP) held at once, at most (default {MAX_CONNECTIONS}; "
        "lowered to fit the open-file limit)",
    )
    p.add_argument(
        "-max-in-flight",
        "--max-in-flight",
        dest="max_in_flight",
        type=_positive,
        default=MAX_IN_FLIGHT,
        metavar="N",
        help=f"queries waiting on plugins per listener, at most; more are REFUSED "
        f"(default {MAX_IN_FLIGHT})",
    )
    p.add_argument(
        "-worker-http", "--worker-http", dest="worker_http", default=None, help=argparse.SUPPRESS
    )
    p.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of 1 or more, not {text!r}")
    return value


def setup_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """CoreDNS's log shape: ``[LEVEL] message`` on standard output, no timestamp.

    The tools that print data and exit (``-dump``, ``-allocations``) log to
    ``stream``, standard error, so that their output stays that data alone.
    """
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    root = logging.getLogger("pycorefile")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    rest = list(sys.argv[1:] if argv is None else argv)
    if rest[:1] == ["capture"]:
        from .capture import main as capture_main

        return capture_main(rest[1:])
    args = _parser().parse_args(argv)
    # The data tools' output is JSON alone: their warnings (an import glob that
    # matches nothing, ...) go to standard error.
    setup_logging(stream=sys.stderr if args.dump or args.allocations else None)
    if args.extra:
        print(f"extra command line arguments: {args.extra}", file=sys.stderr)
        return 1
    try:
        if args.version:
            print("\n".join(version_lines()))
            return 0
        registry = default_registry()
        if args.plugins:
            for name in registry.order():
                entry = registry.entries[name]
                print(f"{name:<16} {entry.package:<20} {entry.value}")
            return 0
        source = Source.read(args.conf, args.port)
        if args.dump:
            blocks = parse_corefile(source.text, source.filename)
            print(json.dumps(blocks_to_json(blocks), indent=2))
            return 0
        # As Go programs (so CoreDNS) do: the connection budget follows from it.
        raise_open_file_limit()
        workers = bool(args.worker_http or args.workers > 1)
        options = ServerOptions(
            max_connections=args.max_connections,
            max_in_flight=args.max_in_flight,
            reuse_port=workers,
            http_socket=args.worker_http,
        )
        # A server parses apart: the parser's memory never stays resident.
        parse = parse_corefile if args.validate or args.allocations else parse_corefile_apart
        runner = Runner(source, registry=registry, dns_port=args.port, options=options, parse=parse)
        config = runner.build(source)
        if args.validate:
            print("\n".join(describe(config)))
            return 0
        if args.allocations:
            try:
                tables = [p.allocation_table() for p in config.find("autoalloc")]  # type: ignore[attr-defined]
            except (ValueError, OSError) as exc:
                print(f"cannot compute allocations: {exc}", file=sys.stderr)
                return 1
            print(json.dumps([row for t in tables for row in t], indent=2))
            return 0
    except CorefileError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except RegistryError as exc:
        print(f"plugin registry: {exc}", file=sys.stderr)
        return 1
    if args.workers < 1:
        print("-workers needs a number of 1 or more", file=sys.stderr)
        return 1
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        if args.workers > 1:
            argv = [a for a in (argv if argv is not None else sys.argv[1:])]
            supervisor = Supervisor(runner, config, args.workers, _without_workers(argv))
            trio.run(partial(supervisor.run, quiet=args.quiet, pidfile=args.pidfile))
            return 0
        trio.run(_serve, runner, config, args.quiet, args.pidfile)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        problem = user_facing(exc)
        if problem is None:
            if runner.serving:
                print("stopped while serving, by an unexpected error:", file=sys.stderr)
            raise
        what = "stopped while serving" if runner.serving else "cannot start"
        print(f"{what}: {problem}", file=sys.stderr)
        return 1
    return 0


def _without_workers(argv: list[str]) -> list[str]:
    """The command line for a worker: the parent's, less ``-workers N`` and ``-pidfile F``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = arg.lstrip("-").partition("=")
        if name in ("workers", "pidfile"):
            skip = not eq
            continue
        out.append(arg)
    return out


async def _serve(runner: Runner, config: object, quiet: bool, pidfile: str | None) -> None:
    assert isinstance(config, Config)
    await runner.run(config, quiet=quiet, pidfile=pidfile)


if __name__ == "__main__":
    raise SystemExit(main())
