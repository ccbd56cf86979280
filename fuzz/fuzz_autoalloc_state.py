"""Fuzz the autoalloc state-file loader: any bytes give a state or a StateError, nothing else."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["pycorefile_plugins.autoalloc"]):
    from pycorefile_plugins.autoalloc._state import StateError, decode


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(StateError):
        decode(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
