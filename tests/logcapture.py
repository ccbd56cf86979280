"""Collecting what the server logs, in tests that read its log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def collect_logs(level: int) -> Iterator[list[logging.LogRecord]]:
    """The records the ``pycorefile`` logger emits at ``level`` and above, whatever
    the logger's propagation; the logger's level is restored afterwards."""
    logger = logging.getLogger("pycorefile")
    handler = _Collect()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
