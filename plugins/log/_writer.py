"""Buffered query-log output: lines collected in memory, written to stdout in batches.

Writing each line through ``sys.stdout`` (and a flush per line on a terminal)
costs more than answering a cached query, so lines are kept in a list and
written together: at most ``FLUSH_DELAY`` seconds after the first line of a
batch, at once when ``MAX_LINES`` are waiting, and when the server stops.
"""

from __future__ import annotations

import sys

import trio

FLUSH_DELAY = 0.1
MAX_LINES = 512


class LineWriter:
    """One per configuration; every log plugin of it writes here, so lines keep their order.

    The hot path appends to ``lines`` itself and calls ``added`` only when the
    list holds one line (a batch starts) or ``MAX_LINES`` (write it now).
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._pending = trio.Event()
        self._running = False

    def write(self, line: str) -> None:
        lines = self.lines
        lines.append(line)
        if len(lines) == 1 or len(lines) >= MAX_LINES:
            self.added()

    def added(self) -> None:
        """A batch has started (wake the flusher), or is full (write it now)."""
        if len(self.lines) >= MAX_LINES:
            self.flush()
        else:
            self._pending.set()

    def flush(self) -> None:
        """Write what is waiting (looking ``sys.stdout`` up now, so redirection works)."""
        lines = self.lines
        if not lines:
            return
        lines.append("")
        data = "\n".join(lines)
        lines.clear()
        out = sys.stdout
        try:
            out.write(data)
            out.flush()
        except (OSError, ValueError):
            pass  # stdout closed or gone: losing access logs must not stop serving

    async def run(self) -> None:
        """Flush each batch shortly after it starts; only one task per writer does it."""
        if self._running:
            return
        self._running = True
        try:
            while True:
                await self._pending.wait()
                self._pending = trio.Event()
                await trio.sleep(FLUSH_DELAY)
                self.flush()
        finally:
            self._running = False
            self.flush()
