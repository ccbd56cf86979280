"""A private network and mount namespace per test, so capture rules never touch the host.

A holder process made by ``unshare --net --mount`` keeps the namespaces alive; every
command of the test enters them with ``nsenter``. Inside, ``lo`` is up, ``/run`` is a fresh
tmpfs, ``/etc/resolv.conf`` is a file of the test (bind-mounted), and the directories the
dedicated user needs to run Python but may not pass through on the host (a private home
holding the interpreter) are opened to it, so nothing the test does is seen outside.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

REPO = Path(__file__).resolve().parents[2]
# The dedicated user pycorefile runs as in these tests; no passwd entry is needed.
PROXY_UID = 15053
PROXY_GID = 15053
PROXY_PORT = 15053
TIMEOUT = 20.0

NEEDED = ("unshare", "nsenter", "setpriv", "ip", "nft", "iptables-save", "dnsmasq", "dig")


def require_namespaces() -> None:
    """Fail (not skip) with the reason when the machine cannot run these tests."""
    if os.geteuid() != 0:
        pytest.fail("the capture namespace tests need root (unshare --net, nft, iptables)")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in NEEDED if not any(Path(d, t).exists() for d in path.split(":"))]
    if missing:
        pytest.fail(f"missing tools for the capture tests: {', '.join(missing)}")


def _paths_the_proxy_user_reads() -> tuple[list[Path], list[Path]]:
    """What a Python run as the dedicated user needs: directories it must list (the import
    path, the repository) and files and directories it must reach (the interpreter, the
    prefixes of the virtualenv and of its base installation)."""
    listed = [Path(p) for p in [*sys.path, str(REPO)] if p and Path(p).is_dir()]
    reached = [
        Path(sys.executable),
        *(Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)),
    ]
    return listed, reached


def opened_for_the_proxy_user() -> dict[Path, int]:
    """The directories closed to other users that the dedicated user must pass through
    (or list), each with the mode it gets in the namespace, outermost first.

    A virtualenv (or an interpreter) whose base installation lives under a private home,
    such as root's 0700 one, cannot run as another user. The namespace shows such a
    directory with the missing permission bits for others added (an overlay whose upper
    directory has that mode), so the dedicated user runs the very interpreter of the tests
    with no privilege at all; the host's directories are not changed.
    """
    needs: dict[Path, int] = {}
    listed, reached = _paths_the_proxy_user_reads()
    for path, own_bits in [
        *((p, stat.S_IROTH | stat.S_IXOTH) for p in listed),
        *((p, 0) for p in reached),
    ]:
        real = path.resolve()
        for directory, bits in [*((d, stat.S_IXOTH) for d in real.parents), (real, own_bits)]:
            if bits and directory.is_dir():
                needs[directory] = needs.get(directory, 0) | bits
    opened: dict[Path, int] = {}
    for directory in sorted(needs, key=lambda d: len(d.parts)):
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & needs[directory] != needs[directory]:
            opened[directory] = mode | needs[directory]
    return opened


def _open_for_the_proxy_user_script() -> str:
    """Shell commands, run in the new mount namespace, that open those directories."""
    lines = []
    for i, (directory, mode) in enumerate(opened_for_the_proxy_user().items()):
        if any(c in str(directory) for c in ",:\\"):
            raise RuntimeError(f"cannot overlay {directory}: a comma, colon or backslash")
        info = directory.stat()
        upper, work = f"/run/opened/{i}/upper", f"/run/opened/{i}/work"
        options = shlex.quote(f"lowerdir={directory},upperdir={upper},workdir={work}")
        lines += [
            f"mkdir -p {upper} {work}",
            f"chown {info.st_uid}:{info.st_gid} {upper}",
            f"chmod {mode:o} {upper}",
            f"mount -t overlay overlay -o {options} {shlex.quote(str(directory))}",
        ]
    return "".join(f"{line}; " for line in lines)


def as_proxy_user(cmd: Sequence[str]) -> list[str]:
    """``cmd`` run as the dedicated uid and gid, with no supplementary groups and no
    capability (what it must read is opened in the namespace: see
    ``opened_for_the_proxy_user``)."""
    return ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_GID}", "--clear-groups", *cmd]


class NetNS:
    """One private namespace; ``with NetNS(tmp_path) as ns: ns.run(...)``."""

    def __init__(self, tmp: Path, resolv_conf: str = "nameserver 127.0.0.1\n") -> None:
        self.tmp = tmp
        self.resolv = tmp / "resolv.conf"
        self.resolv.write_text(resolv_conf)
        self.holder: subprocess.Popen[str] | None = None
        self.children: list[subprocess.Popen[str]] = []
        self.env = {
            **os.environ,
            "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin",
            "PYTHONPATH": str(REPO),
        }

    def __enter__(self) -> NetNS:
        setup = (
            "set -e; ip link set lo up; mount -t tmpfs tmpfs /run; "
            f"mount --bind {self.resolv} /etc/resolv.conf; {_open_for_the_proxy_user_script()}"
            "echo ready; exec sleep 600"
        )
        self.holder = subprocess.Popen(
            # pdeathsig: the namespace goes away with the test run, even if it is killed.
            ["setpriv", "--pdeathsig=KILL", "unshare", "--net", "--mount", "sh", "-c", setup],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            self.holder.kill()
            _, err = self.holder.communicate(timeout=TIMEOUT)
            raise RuntimeError(f"could not make a network namespace: {err}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            child.wait(timeout=TIMEOUT)
        assert self.holder is not None
        self.holder.kill()
        self.holder.communicate(timeout=TIMEOUT)

    def _enter(self, cmd: Sequence[str]) -> list[str]:
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--net", "--mount", "--", *cmd]

    def run(
        self, *cmd: str, timeout: float = TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace to completion."""
        done = subprocess.run(
            self._enter(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env=self.env,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def start(self, *cmd: str, log: str, stdin: str | None = None) -> subprocess.Popen[str]:
        """Start a background command in the namespace, its output going to ``tmp/log``."""
        with open(self.tmp / log, "w") as out:
            child = subprocess.Popen(
                self._enter(cmd),
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=REPO,
                env=self.env,
            )
        self.children.append(child)
        if stdin is not None:
            assert child.stdin is not None
            child.stdin.write(stdin)
            child.stdin.close()
        return child

    def log(self, name: str) -> str:
        """What a background command has printed so far."""
        return (self.tmp / name).read_text()

    def capture(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``pycorefile capture ARGS`` as root in the namespace."""
        return self.run(sys.executable, "-m", "pycorefile", "capture", *args, check=check)

    # --- the cast: an upstream and pycorefile ----------------------------------------------

    def start_dnsmasq(self) -> None:
        """The test upstream: dnsmasq on 127.0.0.2:53, logging every query it gets.

        It answers 192.0.2.9 for external.test and every name below it.
        """
        self.start(
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--listen-address=127.0.0.2",
            "--bind-interfaces",
            "--port=53",
            "--address=/external.test/192.0.2.9",
            "--log-queries",
            "--log-facility=-",
            "--pid-file=",
            "--user=root",
            log="dnsmasq.log",
        )
        self.wait_answer("127.0.0.2", 53, "ready.external.test", "192.0.2.9")

    def start_pycorefile(self, corefile: str) -> subprocess.Popen[str]:
        """pycorefile as the dedicated user, its Corefile on standard input."""
        proc = self.start(
            *as_proxy_user([sys.executable, "-m", "pycorefile", "-conf", "stdin"]),
            log="pycorefile.log",
            stdin=corefile,
        )
        self.wait_answer(
            "127.0.0.1", PROXY_PORT, "whoami.mesh.test", "_udp.whoami.mesh.test.", proc
        )
        return proc

    def dig(self, server: str, port: int, name: str, *flags: str) -> str:
        """``dig`` with one short try; its full output."""
        done = self.run(
            "dig",
            f"@{server}",
            "-p",
            str(port),
            "+time=2",
            "+tries=1",
            *flags,
            name,
            check=False,
        )
        return done.stdout + done.stderr

    def wait_answer(
        self,
        server: str,
        port: int,
        name: str,
        expect: str,
        proc: subprocess.Popen[str] | None = None,
    ) -> None:
        """Poll until ``dig`` gets an answer containing ``expect`` (bounded)."""
        deadline = time.monotonic() + TIMEOUT
        output = ""
        while time.monotonic() < deadline:
            output = self.dig(server, port, name)
            if expect in output:
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no answer from {server}:{port}: {output}\n{self.tmp}")

    # --- the rules, for exact before/after comparisons -------------------------------------

    def rules(self) -> str:
        """nft's whole ruleset plus iptables-save and ip6tables-save, counters zeroed."""
        ruleset = self.run("nft", "list", "ruleset").stdout
        parts = [re.sub(r"packets \d+ bytes \d+", "packets 0 bytes 0", ruleset)]
        for tool in ("iptables-save", "ip6tables-save"):
            saved = self.run(tool).stdout
            parts.append(
                "\n".join(
                    re.sub(r"\[\d+:\d+\]", "[0:0]", line)
                    for line in saved.splitlines()
                    if not line.startswith("#")
                )
            )
        return "\n---\n".join(parts)
