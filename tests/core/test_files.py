"""pycorefile.files: reading and watching the files plugins serve from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycorefile.files import (
    FileError,
    FileMissing,
    WatchedFiles,
    file_stamps,
    list_files,
    read_text,
)


def test_read_text(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a\r\nb\rc\n")
    assert read_text(str(path), 100) == "a\nb\nc\n"
    with pytest.raises(FileError) as caught:
        read_text(str(path), 3, "max_file_size")
    assert caught.value.reason == "larger than the limit of 3 bytes (max_file_size)"
    assert str(caught.value) == f"{path}:0: larger than the limit of 3 bytes (max_file_size)"
    with pytest.raises(FileError) as caught:
        read_text(str(path), 3)
    assert caught.value.reason == "larger than the limit of 3 bytes"


def test_read_text_refuses_what_is_not_a_regular_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(FileMissing):
        read_text(str(tmp_path / "absent"), 100)
    with pytest.raises(FileError, match="is a directory, not a file") as caught:
        read_text(str(tmp_path), 100)
    assert not isinstance(caught.value, FileMissing)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileError, match="not a regular file"):
        read_text(str(fifo), 100)  # returns at once: the FIFO is opened non-blocking
    latin = tmp_path / "latin"
    latin.write_bytes(b"caf\xe9\n")
    with pytest.raises(FileError, match="not UTF-8"):
        read_text(str(latin), 100)
    assert read_text(str(latin), 100, strict=False) == "caf\ufffd\n"


def test_list_files_and_stamps(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("")
    (tmp_path / "a.json").write_text("")
    (tmp_path / ".hidden.json").write_text("")
    (tmp_path / "notes.txt").write_text("")
    names = [Path(f).name for f in list_files([str(tmp_path)], (".json", ".yaml"))]
    assert names == ["a.json", "b.yaml"]
    assert list_files([str(tmp_path)]) == [str(tmp_path)]  # no suffixes: the path itself
    with pytest.raises(FileMissing):
        list_files([str(tmp_path / "absent")])
    stamps = file_stamps([str(tmp_path / "a.json"), str(tmp_path / "absent")])
    assert stamps[1] == (str(tmp_path / "absent"), -1, -1, -1)
    # Replaced by a rename with the same size and time: the inode tells.
    new = tmp_path / "new"
    new.write_text("")
    st = (tmp_path / "a.json").stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, tmp_path / "a.json")
    assert file_stamps([str(tmp_path / "a.json")])[0] != stamps[0]


async def test_watched_files(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("one")
    watch = WatchedFiles([str(path)])
    assert await watch.changed()  # never read
    assert await watch.read(lambda: read_text(str(path), 100)) == "one"
    assert not await watch.changed()
    path.write_text("two!")
    assert await watch.changed()

    def broken() -> str:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await watch.read(broken)
    assert not await watch.changed()  # a failed read is not retried until the file changes
    path.unlink()
    assert await watch.changed()
