"""Running the real ``pycorefile`` command in a subprocess, for CLI and signal tests."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port")


def run_cli(
    *args: str, stdin: str | None = None, cwd: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pycorefile ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "pycorefile", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def get_json(port: int, path: str) -> Any:
    """GET ``path`` of a server process's HTTP endpoint on 127.0.0.1 (status 200 asserted)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``check`` (blocking: for a server in another process) until it holds, bounded
    in time; an AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


class ServerProcess:
    """``python -m pycorefile`` in the background; stdout lines collected as they come."""

    def __init__(
        self,
        args: Sequence[str],
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.args = list(args)
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.preexec_fn = preexec_fn
        """Run in the child before the server starts (e.g. to lower a resource limit)."""
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pycorefile", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cwd,
            env=self.env,
            preexec_fn=self.preexec_fn,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 15) -> str:
        """Wait for an output line containing ``text``; fail with all output if none."""
        for line in self.lines:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got is None:
                break
            self.lines.append(got)
            if text in got:
                return got
        raise AssertionError(f"no line with {text!r}; output so far:\n" + "\n".join(self.lines))

    def drain(self, settle: float = 0.2) -> list[str]:
        """Collect what was printed until output pauses for ``settle`` seconds."""
        while True:
            try:
                line = self._queue.get(timeout=settle)
            except queue.Empty:
                return self.lines
            if line is None:
                return self.lines
            self.lines.append(line)

    def read_to_end(self, timeout: float = 15) -> list[str]:
        """Every line printed, up to the end of the output (the process has exited or is
        exiting): not a pause, which a loaded machine can make anywhere."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                output = "\n".join(self.lines)
                raise AssertionError(f"the output did not end; so far:\n{output}") from None
            if line is None:
                self._queue.put(None)  # a later call ends at once too
                return self.lines
            self.lines.append(line)

    def wait_for_file(self, path: Path, timeout: float = 30) -> str:
        """The text of ``path`` once it exists; fail with the output if the process exits
        first or it does not appear within ``timeout``."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                output = "\n".join(self.read_to_end())
                raise AssertionError(f"exited {self.proc.returncode} before {path}:\n{output}")
            if time.monotonic() > deadline:
                output = "\n".join(self.drain())
                raise AssertionError(f"no {path} after {timeout:g}s; output so far:\n{output}")
            time.sleep(0.05)
        return path.read_text()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
