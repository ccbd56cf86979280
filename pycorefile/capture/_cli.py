"""``pycorefile capture install|remove|status``: the operator's side of DNS capture."""

from __future__ import annotations

import argparse
import grp
import pwd
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import _probe
from ._apply import (
    DEFAULT_STATE_FILE,
    IptablesBackend,
    NftBackend,
    backends,
    find_tool,
    ipv6_available,
)
from ._rules import (
    DEFAULT_PORT,
    CaptureError,
    CaptureOptions,
    Installed,
    IPAddress,
    install_warnings,
    iptables_install_input,
    listener_serves,
    nft_install_script,
    parse_resolv_conf,
)

# status exit codes, for scripts and liveness checks
OK = 0
BROKEN = 1  # capture is installed but captured queries would fail (or loop)
NOT_INSTALLED = 2
UNKNOWN = 3  # the rules could not be read


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycorefile capture",
        description="Redirect this network namespace's DNS queries (UDP and TCP port 53) "
        "to pycorefile, except pycorefile's own.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def backend(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backend",
            choices=("auto", "nft", "iptables"),
            default="auto",
            help="nft (own table inet pycorefile) or iptables (nat chain PYCOREFILE_OUTPUT); "
            "auto uses nft when it works (default auto)",
        )

    def state(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-file",
            default=DEFAULT_STATE_FILE,
            metavar="PATH",
            help=f"where the iptables backend notes what remove must undo "
            f"(default {DEFAULT_STATE_FILE})",
        )

    install = commands.add_parser(
        "install", help="redirect DNS to pycorefile (running it again changes nothing)"
    )
    install.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the local port pycorefile listens on (default {DEFAULT_PORT})",
    )
    install.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="NAME",
        help="user whose traffic is not captured: the one pycorefile runs as (repeatable)",
    )
    install.add_argument(
        "--uid", action="append", type=int, default=[], metavar="N", help="the same by id"
    )
    install.add_argument(
        "--gid",
        action="append",
        default=[],
        metavar="N",
        help="group (id or name) whose traffic is not captured (repeatable)",
    )
    install.add_argument(
        "--only-resolv-conf",
        action="store_true",
        help="capture only queries to the name servers of resolv.conf (default: every destination)",
    )
    install.add_argument(
        "--resolv-conf",
        default="/etc/resolv.conf",
        metavar="PATH",
        help="resolv.conf to read (default /etc/resolv.conf)",
    )
    install.add_argument("--ipv4-only", action="store_true", help="leave IPv6 DNS traffic alone")
    install.add_argument(
        "--wait-proxy",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for pycorefile to answer on 127.0.0.1:PORT, and "
        "install nothing if it does not",
    )
    install.add_argument(
        "--dry-run", action="store_true", help="print the rules instead of installing them"
    )
    backend(install)
    state(install)
    install.set_defaults(func=_install)

    remove = commands.add_parser(
        "remove", help="delete exactly what install added (nothing there is fine)"
    )
    backend(remove)
    state(remove)
    remove.set_defaults(func=_remove)

    status = commands.add_parser(
        "status",
        help="show the rules and whether pycorefile answers; exit 0 when capturing and "
        "answering, 1 when capturing but not answering, 2 when not installed, 3 when the "
        "rules cannot be read",
    )
    status.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to test (default: the one the rules redirect to, else 15053)",
    )
    status.add_argument(
        "--timeout",
        type=float,
        default=_probe.PROBE_TIMEOUT,
        metavar="SECONDS",
        help=f"wait this long for each reply (default {_probe.PROBE_TIMEOUT:g})",
    )
    backend(status)
    state(status)
    status.set_defaults(func=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pycorefile capture ARGS``; returns the exit status."""
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except CaptureError as exc:
        print(f"pycorefile capture {args.command}: {exc}", file=sys.stderr)
        return UNKNOWN if args.command == "status" else 1


# --- install -------------------------------------------------------------------------------


def _user_id(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise CaptureError(
            f"no user {name!r} here; where the user is not in /etc/passwd "
            "(an init container, for instance) give --uid N"
        ) from None


def _group_id(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise CaptureError(f"no group {name!r} here; give the id instead") from None


def _options(args: argparse.Namespace) -> tuple[CaptureOptions, list[str], list[str]]:
    """The options from the command line, with notes and warnings for the operator."""
    notes: list[str] = []
    nameservers: tuple[IPAddress, ...] = ()
    try:
        text = Path(args.resolv_conf).read_text()
        nameservers = parse_resolv_conf(text, args.resolv_conf)
    except OSError as exc:
        if args.only_resolv_conf:
            raise CaptureError(f"cannot read {args.resolv_conf}: {exc.strerror}") from None
    except CaptureError:
        if args.only_resolv_conf:
            raise
    ipv6 = not args.ipv4_only
    if ipv6 and not ipv6_available():
        ipv6 = False
        notes.append("IPv6 is off in this network namespace: capturing IPv4 only")
    options = CaptureOptions(
        port=args.port,
        exclude_uids=tuple([*map(_user_id, args.user), *args.uid]),
        exclude_gids=tuple(map(_group_id, args.gid)),
        destinations=nameservers if args.only_resolv_conf else None,
        ipv6=ipv6,
    )
    listening = _probe.listeners(53, "udp")
    local_resolvers = [
        a
        for a in nameservers
        if a.is_loopback and any(listener_serves(item, a) for item in listening)
    ]
    return options, notes, install_warnings(options, local_resolvers)


def _wait_for_proxy(port: int, seconds: float) -> None:
    """Poll 127.0.0.1:PORT until it answers DNS; CaptureError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        result = _probe.probe(
            _probe.LOOPBACK[4], port, "udp", max(0.05, min(_probe.PROBE_TIMEOUT, remaining))
        )
        if result.answered:
            return
        if time.monotonic() + 0.2 >= deadline:
            raise CaptureError(
                f"pycorefile did not answer on {result.endpoint} within {seconds:g} s "
                f"({result.detail}); nothing installed"
            )
        time.sleep(0.2)


def _install(args: argparse.Namespace) -> int:
    options, notes, warnings = _options(args)
    if args.dry_run:
        print("# nftables (nft -f -):")
        print(nft_install_script(options), end="")
        for version in (4, 6):
            if options.targets(version) == ():
                continue
            tool = "iptables" if version == 4 else "ip6tables"
            print(f"# {tool} fallback ({tool}-restore --noflush), on a nat table without it:")
            print(iptables_install_input(options, version, ""), end="")
        _print_messages(notes, warnings)
        return 0
    if args.wait_proxy > 0:
        _wait_for_proxy(options.port, args.wait_proxy)
    chosen = backends(args.backend, args.state_file)
    if not chosen:
        raise CaptureError(
            "neither nft nor iptables works here (Debian packages nftables or iptables; "
            "the command needs root or NET_ADMIN)"
        )
    backend = chosen[0]
    notes += backend.install(options)
    notes += _remove_other_backends(backend.name, args.state_file)
    installed = backend.read()
    _verify(options, installed)
    print(f"capture installed with {backend.name}:")
    for item in installed:
        print(f"  {item.where}")
        print(_indent(item.rules_text, 4))
    target = _probe.probe(_probe.LOOPBACK[4], options.port, "udp", 0.5)
    if not target.answered:
        notes.append(
            f"pycorefile does not answer on {target.endpoint} yet ({target.detail}): "
            "captured queries fail until it does"
        )
    _print_messages(notes, warnings)
    return 0


def _remove_other_backends(keep: str, state_file: str) -> list[str]:
    """Remove capture rules an earlier install left in the other backend."""
    notes = []
    for other in (NftBackend(), IptablesBackend(state_file)):
        if other.name == keep or not _tool_present(other.name):
            continue
        try:
            for what in other.remove():
                notes.append(f"removed the earlier capture in {what}")
        except CaptureError as exc:
            notes.append(f"could not check {other.name} for an earlier capture: {exc}")
    return notes


def _tool_present(backend: str) -> bool:
    return find_tool("nft" if backend == "nft" else "iptables-save") is not None


def _verify(options: CaptureOptions, installed: list[Installed]) -> None:
    """Read-back check, so a capture that did not take effect is an error, not a silence."""
    if not installed or not any(item.redirects for item in installed):
        raise CaptureError("the rules were applied but do not read back; nothing is captured")
    for item in installed:
        if item.ports != (options.port,):
            raise CaptureError(f"{item.where} redirects to {item.ports}, not {options.port}")
        if not set(options.uids) <= set(item.uids) or not set(options.gids) <= set(item.gids):
            raise CaptureError(f"{item.where} does not exclude the given user or group")


def _print_messages(notes: list[str], warnings: list[str]) -> None:
    for note in notes:
        print(f"note: {note}")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line.replace("\t", "    ") for line in text.splitlines())


# --- remove --------------------------------------------------------------------------------


def _remove(args: argparse.Namespace) -> int:
    if args.backend == "auto":
        chosen: list[NftBackend | IptablesBackend] = [
            b for b in (NftBackend(), IptablesBackend(args.state_file)) if _tool_present(b.name)
        ]
    else:
        chosen = backends(args.backend, args.state_file)
    removed = [what for backend in chosen for what in backend.remove()]
    if removed:
        for what in removed:
            print(f"removed {what}")
    else:
        print("capture was not installed; nothing to remove")
    return 0


# --- status --------------------------------------------------------------------------------


def _read_installed(args: argparse.Namespace) -> tuple[list[Installed], list[str]]:
    chosen: list[NftBackend | IptablesBackend] = (
        [NftBackend(), IptablesBackend(args.state_file)]
        if args.backend == "auto"
        else backends(args.backend, args.state_file)
    )
    installed: list[Installed] = []
    problems: list[str] = []
    for backend in chosen:
        if not _tool_present(backend.name):
            continue
        try:
            installed += backend.read()
        except CaptureError as exc:
            problems.append(f"cannot read the {backend.name} rules: {exc}")
    return installed, problems


def _describe(item: Installed) -> list[str]:
    lines = [f"  {item.where}"]
    for version in item.versions:
        redirects = [r for r in item.redirects if r.version == version]
        protocols = " and ".join(sorted({r.protocol.upper() for r in redirects}, reverse=True))
        destinations = sorted({d for r in redirects for d in (r.destinations or ("*",))})
        where = "every destination" if "*" in destinations else ", ".join(destinations)
        ports = sorted({r.port for r in redirects})
        local = "127.0.0.1" if version == 4 else "[::1]"
        counted = [r.packets for r in redirects if r.packets is not None]
        total = sum(counted)
        plural = "" if total == 1 else "s"
        tally = f"; {total} connection{plural} captured so far" if counted else ""
        lines.append(
            f"    IPv{version}: {protocols} to port 53 of {where} -> "
            + ", ".join(f"{local}:{p}" for p in ports)
            + tally
        )
    excluded = [f"uid {u}" for u in item.uids] + [f"gid {g}" for g in item.gids]
    lines.append(f"    not captured: traffic of {', '.join(excluded) or 'nobody (loop!)'}")
    lines += [f"    note: {note}" for note in item.notes]
    lines.append(_indent(item.rules_text, 4))
    return lines


def _status(args: argparse.Namespace) -> int:
    installed, problems = _read_installed(args)
    capturing = [item for item in installed if item.redirects]
    print("capture:")
    if capturing:
        for item in installed:
            print("\n".join(_describe(item)))
    elif installed:
        for item in installed:
            print("\n".join(_describe(item)))
        print("  the chain exists but nothing is redirected")
    elif not problems:
        print("  not installed: DNS queries go to their original servers")
    for problem in problems:
        print(f"  {problem}")

    ports = sorted({p for item in capturing for p in item.ports})
    port = args.port if args.port is not None else (ports[0] if ports else DEFAULT_PORT)
    trouble: list[str] = []
    if args.port is not None and ports and ports != [args.port]:
        trouble.append(f"the rules redirect to port {ports}, not to {args.port}")
    versions = sorted({v for item in capturing for v in item.versions}) or (
        [4, 6] if ipv6_available() else [4]
    )
    print(f"pycorefile on port {port}:")
    for version in versions:
        address = _probe.LOOPBACK[version]
        for protocol in ("udp", "tcp"):
            result = _probe.probe(address, port, protocol, args.timeout)
            state = "answering" if result.answered else "NOT answering"
            print(f"  {result.endpoint} {protocol.upper()}: {state} ({result.detail})")
            if not result.answered:
                trouble.append(
                    f"pycorefile is NOT answering on {result.endpoint} over {protocol.upper()}"
                )
        trouble += _check_owner(address, port, capturing)

    if problems and not capturing:
        print("verdict: unknown, the rules could not be read (run as root)")
        return UNKNOWN
    if not capturing:
        print(
            "verdict: capture is not installed; the workload's DNS does not go through pycorefile"
        )
        return NOT_INSTALLED
    if trouble:
        for line in trouble:
            print(f"problem: {line}")
        print(
            "verdict: capture is installed but captured DNS queries FAIL: fix or start "
            "pycorefile, or run 'pycorefile capture remove' to let queries through"
        )
        return BROKEN
    print("verdict: capture is installed and pycorefile answers")
    return OK


def _check_owner(address: IPAddress, port: int, capturing: list[Installed]) -> list[str]:
    """A listener whose user and group are not excluded would capture its own queries."""
    owner = _probe.owner_of(address, port)
    if owner is None or not capturing:
        return []
    gid = "?" if owner.gid is None else str(owner.gid)
    host = f"[{address}]" if address.version == 6 else str(address)
    print(f"  the UDP socket on {host}:{port} belongs to uid {owner.uid}, gid {gid}")
    uids = {u for item in capturing for u in item.uids}
    gids = {g for item in capturing for g in item.gids}
    if owner.uid in uids or (owner.gid is not None and owner.gid in gids):
        return []
    if owner.gid is None and gids:
        return []  # its group could not be read; do not claim a loop
    return [
        f"the process on port {port} (uid {owner.uid}, gid {gid}) is not excluded from "
        "capture: its own upstream queries to port 53 loop back to itself"
    ]
