"""The state file: its JSON format, checked reading with recovery, and crash-safe writing.

Two copies are kept, ``PATH`` and ``PATH.bak``, each replaced atomically
(temporary file, fsync, rename, fsync of the directory) one after the other,
so at every instant at least one complete, checksummed copy exists. Reading
takes the valid copy with the highest generation; if neither is valid the
caller refuses to start rather than hand out addresses that may be in use.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._allocator import AllocationState, Pool, Record, format_timestamp, parse_timestamp

FORMAT = "pycorefile-autoalloc"
VERSION = 1


class StateError(Exception):
    """A state copy that cannot be used, with the reason."""


@dataclass(frozen=True)
class Loaded:
    """A state read from disk: which copy it came from and what was wrong with the other."""

    state: AllocationState
    source: str
    problems: tuple[str, ...] = ()
    """Why the other copy was not used (``PATH.bak: missing`` is not a problem)."""


def backup_path(path: str) -> str:
    return path + ".bak"


def lock_path(path: str) -> str:
    return path + ".lock"


# -- Format ----------------------------------------------------------------------------


def encode(state: AllocationState, pool: Pool) -> bytes:
    """The state as JSON, with a checksum over everything else so damage is detected."""
    records = sorted(state.records.values(), key=lambda r: int(ipaddress.ip_address(r.ipv4)))
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "generation": state.generation,
        "ipv4_prefix": str(pool.ipv4),
        "ipv6_prefix": str(pool.ipv6),
        "next": state.cursor,
        "hosts": [
            {
                "host": r.host,
                "ipv4": r.ipv4,
                "ipv6": r.ipv6,
                "namespace": r.namespace,
                "entry": r.entry,
                "assigned": format_timestamp(r.assigned),
                "released": format_timestamp(r.released) if r.released is not None else None,
            }
            for r in records
        ],
    }
    doc["checksum"] = _checksum(doc)
    return (json.dumps(doc, indent=1) + "\n").encode()


def _checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def decode(data: bytes) -> AllocationState:
    """Parse and check a state copy; raise StateError saying what is wrong, and nothing else.

    A file edited by hand is accepted without its ``checksum`` field; with
    one, it must match. Whatever the bytes, the only exception is StateError,
    so that a damaged copy always leads to the other copy.
    """
    try:
        return _decode(data)
    except StateError:
        raise
    except RecursionError:
        raise StateError("nested too deeply") from None
    except Exception as exc:  # a check that missed a case: still a copy not to use
        raise StateError(f"cannot be read ({type(exc).__name__}: {exc})") from None


def _decode(data: bytes) -> AllocationState:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise StateError("not valid JSON (nested too deeply)") from None
    except ValueError:  # json's one other error: a number Python will not convert
        digits = sys.get_int_max_str_digits()
        raise StateError(f"not valid JSON (a number of more than {digits} digits)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateError(f"not a {FORMAT} state file")
    if doc.get("version") != VERSION:
        raise StateError(f"unsupported version {doc.get('version')!r} (expected {VERSION})")
    if "checksum" in doc and doc["checksum"] != _checksum(doc):
        raise StateError("checksum mismatch (the file is damaged or was edited)")
    generation, cursor, hosts = doc.get("generation"), doc.get("next"), doc.get("hosts")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise StateError("'generation' must be a non-negative integer")
    if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 1:
        raise StateError("'next' must be a positive integer")
    if not isinstance(hosts, list):
        raise StateError("'hosts' must be a list")
    records: dict[str, Record] = {}
    owners: dict[str, str] = {}
    for i, item in enumerate(hosts):
        record = _record(item, i)
        if record.host in records:
            raise StateError(f"host {record.host} appears twice")
        for address in (record.ipv4, record.ipv6):
            holder = owners.setdefault(address, record.host)
            if holder != record.host:
                raise StateError(f"address {address} is given to both {holder} and {record.host}")
        records[record.host] = record
    return AllocationState(records, cursor, generation)


def _record(item: object, index: int) -> Record:
    where = f"hosts[{index}]"
    if not isinstance(item, dict):
        raise StateError(f"{where} is not an object")
    fields = {}
    for name in ("host", "ipv4", "ipv6", "namespace", "entry", "assigned"):
        value = item.get(name)
        if not isinstance(value, str):
            raise StateError(f"{where}.{name} must be a string")
        fields[name] = value
    if not fields["host"] or fields["host"] != fields["host"].strip().rstrip(".").lower():
        raise StateError(f"{where}.host {fields['host']!r} is not a lowercased host name")
    try:
        v4 = ipaddress.ip_address(fields["ipv4"])
        v6 = ipaddress.ip_address(fields["ipv6"])
    except ValueError as exc:
        raise StateError(f"{where}: {exc}") from None
    if v4.version != 4 or v6.version != 6:
        raise StateError(f"{where}: ipv4/ipv6 hold addresses of the wrong family")
    assigned = _timestamp(fields["assigned"])
    if assigned is None:
        raise StateError(f"{where}.assigned is not an RFC 3339 timestamp")
    released_text = item.get("released")
    released = None
    if released_text is not None:
        released = _timestamp(released_text) if isinstance(released_text, str) else None
        if released is None:
            raise StateError(f"{where}.released is neither null nor an RFC 3339 timestamp")
    return Record(
        fields["host"], str(v4), str(v6), fields["namespace"], fields["entry"], assigned, released
    )


def _timestamp(text: str) -> float | None:
    """A timestamp of the file as epoch seconds; None unless it can be written back too."""
    epoch = parse_timestamp(text)
    try:
        format_timestamp(epoch if epoch is not None else 0.0)
    except (ValueError, OverflowError):  # in range with its offset, not in UTC: year 0
        return None
    return epoch


# -- Reading ---------------------------------------------------------------------------


def read_copy(path: str) -> AllocationState | None:
    """One copy: None when it does not exist; StateError when it exists but is unusable."""
    try:
        # Non-blocking: a FIFO where the file was must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot be read ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateError("not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError as exc:
        raise StateError(f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    return decode(data)


def load(path: str) -> Loaded | None:
    """The newest valid copy of ``path``; None when there is no state at all yet.

    A copy that cannot be used is passed over for the other one (its
    problem is in ``Loaded.problems``). Raises StateError with the whole
    story, naming both copies, when copies exist but none is valid: the
    caller must then refuse to run.
    """
    found: list[tuple[AllocationState, str]] = []
    problems: list[str] = []
    missing: list[str] = []
    for copy in (path, backup_path(path)):
        try:
            state = read_copy(copy)
        except StateError as exc:
            problems.append(f"{copy}: {exc}")
            continue
        if state is None:
            missing.append(copy)
        else:
            found.append((state, copy))
    if not found:
        if len(missing) == 2:
            return None
        raise StateError("; ".join([*problems, *(f"{copy}: missing" for copy in missing)]))
    state, source = max(found, key=lambda item: item[0].generation)
    return Loaded(state, source, tuple(problems))


# -- Writing ---------------------------------------------------------------------------


def write(path: str, data: bytes) -> None:
    """Replace ``path`` and then ``PATH.bak`` with ``data``, each atomically and durably.

    On error (disk full, read-only file system) the temporary file is
    removed, whatever copies existed stay as they were, and OSError is raised.
    """
    _replace(path, data)
    _replace(backup_path(path), data)


def _replace(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(directory: str) -> None:
    """Make a rename durable; some file systems cannot fsync a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: str) -> Iterator[bool]:
    """Hold an exclusive lock on ``PATH.lock`` (workers of one server share the state).

    Yields False when the lock file cannot be opened (e.g. a full or read-only
    directory): the caller goes on unlocked rather than stop answering.
    """
    try:
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def file_signature(path: str) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of ``path``, to notice another process's write cheaply."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
