"""Applying the capture rules: runs ``nft`` or ``iptables-restore`` with the text that
``_rules`` builds, reads the installed rules back, and keeps the little state that exact
removal needs (which iptables tables only exist because capture created them)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._rules import (
    TABLE,
    CaptureError,
    CaptureOptions,
    Installed,
    iptables_install_input,
    iptables_remove_input,
    nat_is_empty,
    nat_section,
    nft_install_script,
    nft_remove_script,
    parse_iptables_save,
    parse_nft_json,
)

TOOL_TIMEOUT = 15.0
DEFAULT_STATE_FILE = "/run/pycorefile/capture.json"
# The tools live in sbin, which a non-root PATH often lacks.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]
)


def find_tool(name: str) -> str | None:
    """Full path of a command, also looking in the sbin directories."""
    return shutil.which(name, path=_SEARCH_PATH)


def run_tool(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion within TOOL_TIMEOUT; CaptureError when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise CaptureError(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise CaptureError(f"{' '.join(argv)}: no result within {TOOL_TIMEOUT:g} s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        if "Operation not permitted" in message or "Permission denied" in message:
            message += " (capture needs root or the NET_ADMIN capability)"
        raise CaptureError(f"{os.path.basename(argv[0])}: {message}")
    return done


def ipv6_available() -> bool:
    """Whether this kernel and network namespace have IPv6 at all."""
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@dataclass
class State:
    """What exact removal must know beyond the rules: nat tables capture brought into being."""

    path: Path
    created_nat: set[int]

    @classmethod
    def load(cls, path: str) -> State:
        """Read the state file; a missing or unreadable one means nothing was created."""
        try:
            data = json.loads(Path(path).read_text())
            created = {int(v) for v in data.get("iptables_created_nat", [])}
        except (OSError, ValueError, TypeError, AttributeError):
            created = set()
        return cls(Path(path), created)

    def save(self) -> None:
        """Write the state, or delete the file when there is nothing to remember."""
        if not self.created_nat:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"iptables_created_nat": sorted(self.created_nat)}))


class NftBackend:
    """Capture in an nftables table of its own: install replaces it, remove deletes it."""

    name = "nft"

    def __init__(self) -> None:
        self.nft = find_tool("nft")

    def usable(self) -> bool:
        """nft is installed and the kernel answers it."""
        if self.nft is None:
            return False
        try:
            run_tool([self.nft, "list", "tables"])
        except CaptureError:
            return False
        return True

    def _tool(self) -> str:
        if self.nft is None:
            raise CaptureError("nft not found (Debian package: nftables)")
        return self.nft

    def families(self) -> list[str]:
        """The families (inet, ip) that have a capture table now."""
        listing = run_tool([self._tool(), "list", "tables"]).stdout.split("\n")
        return [
            family
            for family in ("inet", "ip")
            if f"table {family} {TABLE}" in (line.strip() for line in listing)
        ]

    def install(self, options: CaptureOptions) -> list[str]:
        """Apply the table atomically; falls back to IPv4 only if the kernel refuses IPv6."""
        try:
            run_tool([self._tool(), "-f", "-"], nft_install_script(options))
            return []
        except CaptureError as exc:
            if not options.ipv6:
                raise
            error = exc
        v4_only = CaptureOptions(
            port=options.port,
            exclude_uids=options.exclude_uids,
            exclude_gids=options.exclude_gids,
            destinations=options.destinations,
            ipv6=False,
        )
        run_tool([self._tool(), "-f", "-"], nft_install_script(v4_only))
        return [f"IPv6 capture is not possible here ({error}); capturing IPv4 only"]

    def remove(self) -> list[str]:
        """Delete the capture table (either family); returns what was removed."""
        families = self.families()
        if families:
            run_tool([self._tool(), "-f", "-"], nft_remove_script())
        return [f"nftables table {family} {TABLE}" for family in families]

    def read(self) -> list[Installed]:
        """The capture tables in place, with their rules as nft lists them."""
        found = []
        for family in self.families():
            where = [family, TABLE]
            text = run_tool([self._tool(), "list", "table", *where]).stdout
            data = run_tool([self._tool(), "-j", "list", "table", *where]).stdout
            installed = parse_nft_json(data, text.rstrip("\n"))
            if installed is not None:
                found.append(installed)
        return found


class IptablesBackend:
    """Capture in a nat chain PYCOREFILE_OUTPUT, jumped to first from OUTPUT."""

    name = "iptables"

    def __init__(self, state_file: str = DEFAULT_STATE_FILE) -> None:
        self.state_file = state_file
        self.tools = {
            4: (find_tool("iptables-save"), find_tool("iptables-restore")),
            6: (find_tool("ip6tables-save"), find_tool("ip6tables-restore")),
        }

    def usable(self) -> bool:
        """iptables-save and iptables-restore are installed and work."""
        save, restore = self.tools[4]
        if save is None or restore is None:
            return False
        try:
            run_tool([save])
        except CaptureError:
            return False
        return True

    def _versions(self) -> list[int]:
        return [v for v, (save, restore) in self.tools.items() if save and restore]

    def _save(self, version: int, *args: str) -> str:
        save = self.tools[version][0]
        if save is None:
            raise CaptureError("iptables-save not found (Debian package: iptables)")
        return run_tool([save, *args]).stdout

    def _restore(self, version: int, text: str) -> None:
        restore = self.tools[version][1]
        if restore is None:
            raise CaptureError("iptables-restore not found (Debian package: iptables)")
        run_tool([restore, "-w", "5", "--noflush"], text)

    def install(self, options: CaptureOptions) -> list[str]:
        """Install or refresh the chain for IPv4 and, when wanted and possible, IPv6."""
        notes: list[str] = []
        state = State.load(self.state_file)
        for version in (4, 6):
            wanted = options.targets(version) != ()
            if version not in self._versions():
                if wanted and version == 6:
                    notes.append("ip6tables not found: IPv6 DNS traffic is not captured")
                continue
            if not wanted:
                self._remove_version(version, state)
                continue
            # All tables, not "-t nat", which shows a nat table even where there is none.
            saved = self._save(version)
            existed = nat_section(saved) is not None
            script = iptables_install_input(options, version, saved)
            try:
                self._restore(version, script)
            except CaptureError as exc:
                if version == 4:
                    raise
                notes.append(f"IPv6 capture is not possible here ({exc}); capturing IPv4 only")
                continue
            if not existed:
                state.created_nat.add(version)
        state.save()
        return notes

    def _remove_version(self, version: int, state: State) -> bool:
        # Plain iptables-save only reads: "-t nat" would make a legacy kernel set up the
        # nat table just to show it, which is not ours to add.
        text = self._save(version)
        script = iptables_remove_input(text)
        if script is not None:
            self._restore(version, script)
        if version in state.created_nat:
            state.created_nat.discard(version)
            self._drop_empty_nat(version)
        return script is not None

    def _drop_empty_nat(self, version: int) -> None:
        """Delete a nat table capture created, if it is empty and iptables is nft-based.

        iptables itself cannot delete a table; with the legacy backend the kernel keeps
        the (empty) table, which ``remove`` reports.
        """
        save = self._save(version)
        if not nat_is_empty(save) or nat_section(save) is None:
            return
        nft = find_tool("nft")
        if nft is None or "(nf_tables)" not in self._variant(version):
            return
        family = "ip" if version == 4 else "ip6"
        run_tool([nft, "delete", "table", family, "nat"])

    def _variant(self, version: int) -> str:
        save = self.tools[version][0]
        if save is None:
            return ""
        try:
            return run_tool([save, "--version"]).stdout
        except CaptureError:
            return ""

    def remove(self) -> list[str]:
        """Delete the jump and the chain (IPv4 and IPv6); returns what was removed."""
        state = State.load(self.state_file)
        removed = []
        for version in self._versions():
            if self._remove_version(version, state):
                tool = "iptables" if version == 4 else "ip6tables"
                removed.append(f"{tool} nat chain PYCOREFILE_OUTPUT and its jump")
        state.save()
        return removed

    def read(self) -> list[Installed]:
        """The capture chains in place, IPv4 then IPv6."""
        found = []
        for version in self._versions():
            installed = parse_iptables_save(self._save(version, "-c"), version)
            if installed is not None:
                found.append(installed)
        return found


Backend = NftBackend | IptablesBackend


def backends(choice: str, state_file: str = DEFAULT_STATE_FILE) -> list[Backend]:
    """The backends to use, best first: ``auto`` is nft when it works, else iptables."""
    nft, ipt = NftBackend(), IptablesBackend(state_file)
    if choice == "nft":
        return [nft]
    if choice == "iptables":
        return [ipt]
    return [b for b in (nft, ipt) if b.usable()]
