"""Fuzz the mesh-file loader: any text gives records or a SourceError, nothing else."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["pycorefile_plugins.meshhosts", "yaml"]):
    from pycorefile_plugins.meshhosts._sources import SourceError, parse_text

NAMES = ("fuzz.json", "fuzz.yaml", "fuzz")
"""The first byte picks the file name: JSON, YAML, or told by the content."""


def test_one_input(data: bytes) -> None:
    if not data:
        return
    name = NAMES[data[0] % len(NAMES)]
    text = data[1:].decode("utf-8", errors="replace")
    with contextlib.suppress(SourceError):
        parse_text(text, name)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
