"""Files a plugin serves from: read safely, watched for changes, re-read off the event loop.

What hosts and meshhosts share (and any plugin that answers from a file may
use): ``read_text`` reads a regular file up to a size limit and refuses what
is not one (a directory left where a mounted file is missing, a FIFO that
would hang the reader); ``list_files`` expands directories; ``file_stamps``
identifies the current content of some paths with one ``stat`` per file; and
``WatchedFiles`` pairs them: it tells whether the paths changed since the last
read, and reads in a worker thread. Every error is a ``FileError`` naming the
file (and the line, when a parser knows it), so a plugin can log
``FILE:LINE: reason`` and keep serving what it loaded last.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from typing import TypeVar

import trio

__all__ = [
    "FileError",
    "FileMissing",
    "Stamps",
    "WatchedFiles",
    "file_stamps",
    "list_files",
    "read_text",
]

T = TypeVar("T")

Stamps = tuple[tuple[str, int, int, int], ...]
"""(file, mtime_ns, size, inode) per file; -1s for a path that is not there."""


class FileError(ValueError):
    """A file that cannot be used, with where and why: ``file:line: reason`` (line 0: the file)."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


class FileMissing(FileError):
    """A file or directory that is not there (yet): absent rather than broken."""


def read_text(path: str, max_size: int, limit_name: str = "", *, strict: bool = True) -> str:
    """A regular file's text, at most ``max_size`` bytes of UTF-8 (newlines made ``\\n``).

    Raises ``FileMissing`` when the path is not there, ``FileError`` for
    anything else that makes the file unusable (a directory, FIFO or device, too
    big, unreadable, not UTF-8 unless ``strict`` is off: then bytes that are not
    UTF-8 read as U+FFFD), and nothing else. ``limit_name`` names the setting
    that raises the limit, for the message.
    """
    try:
        # Non-blocking, so that a FIFO put where a file was cannot hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise FileMissing(path, 0, "no such file or directory") from exc
    except OSError as exc:
        raise FileError(path, 0, f"cannot read: {exc.strerror}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise FileError(path, 0, "is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise FileError(path, 0, "not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(max_size + 1)
    except OSError as exc:
        raise FileError(path, 0, f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > max_size:
        hint = f" ({limit_name})" if limit_name else ""
        raise FileError(path, 0, f"larger than the limit of {max_size} bytes{hint}")
    try:
        text = data.decode("utf-8", "strict" if strict else "replace")
    except UnicodeDecodeError as exc:
        raise FileError(path, 0, f"not UTF-8 text: {exc.reason}") from exc
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def list_files(paths: Sequence[str], suffixes: tuple[str, ...] = ()) -> list[str]:
    """The files to read: each path itself or, when ``suffixes`` are given and a path is a
    directory, the directory's entries with one of them (sorted, hidden ones skipped).

    Raises ``FileMissing`` when a path does not exist, ``FileError`` when a
    directory cannot be listed or a path named with one of the suffixes is a
    directory: Docker and Kubernetes make an empty directory where a file to
    mount is missing, which must not read as empty content. Every entry with a
    matching name is listed, whatever it is, so that ``read_text`` refuses the
    ones that are not files. Without ``suffixes`` a directory is listed as
    itself (and ``read_text`` refuses it).
    """
    files: list[str] = []
    for path in paths:
        if suffixes and os.path.isdir(path):
            if path.endswith(suffixes):
                raise FileError(path, 0, "is a directory, not a file")
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                raise FileError(path, 0, f"cannot list directory: {exc.strerror}") from exc
            files.extend(
                os.path.join(path, name)
                for name in names
                if name.endswith(suffixes) and not name.startswith(".")
            )
        elif os.path.exists(path):
            files.append(path)
        else:
            raise FileMissing(path, 0, "no such file or directory")
    return files


def file_stamps(paths: Sequence[str], suffixes: tuple[str, ...] = ()) -> Stamps:
    """What identifies the current content of ``paths``: (file, mtime_ns, size, inode) each.

    Cheap (one ``stat`` per file, blocking: call it in a worker thread from the
    event loop); a missing path shows as a row of -1s, so a deleted file is a
    change too, and so is a file replaced by a rename (a new inode).
    """
    rows: list[tuple[str, int, int, int]] = []
    for path in paths:
        try:
            files = list_files([path], suffixes)
        except FileError:
            rows.append((path, -1, -1, -1))
            continue
        for file in files:
            try:
                st = os.stat(file)
            except OSError:
                rows.append((file, -1, -1, -1))
            else:
                rows.append((file, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(rows)


class WatchedFiles:
    """Some paths a plugin reads, and whether they changed since it last read them.

    ``changed()`` compares their stamps with those taken at the last ``read``;
    ``read(load)`` takes the stamps and runs ``load`` in a worker thread. The
    stamps are kept whether ``load`` succeeds or raises, so a broken file is
    read again only once it changes. What to do with a failure (keep the last
    good state, log, count) is the caller's: ``read`` lets the exception out.
    Both stat and read off the event loop.
    """

    def __init__(self, paths: Sequence[str], suffixes: tuple[str, ...] = ()) -> None:
        self.paths = tuple(paths)
        self.suffixes = suffixes
        self.stamps: Stamps | None = None
        """The stamps at the last read (None before the first)."""

    def _stamp(self) -> Stamps:
        return file_stamps(self.paths, self.suffixes)

    async def changed(self) -> bool:
        """True when the paths differ from what the last ``read`` saw (or none happened)."""
        return await trio.to_thread.run_sync(self._stamp) != self.stamps

    async def read(self, load: Callable[[], T]) -> T:
        """Stamp the paths, then ``load()`` in a worker thread; its exception goes out.

        The thread is abandoned when the caller is cancelled (a shutdown does
        not wait for a slow parse of a big file; its result is dropped).
        """
        stamps = await trio.to_thread.run_sync(self._stamp)
        try:
            value = await trio.to_thread.run_sync(load, abandon_on_cancel=True)
        except Exception:
            self.stamps = stamps
            raise
        self.stamps = stamps
        return value
