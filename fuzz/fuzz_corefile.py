"""Fuzz the Corefile loader: any text gives blocks or a CorefileError, nothing else."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["pycorefile"]):
    from pycorefile.corefile import CorefileError, parse_corefile


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    with contextlib.suppress(CorefileError):
        parse_corefile(text, "fuzz/Corefile", env={"PORT": "53", "ZONE": "example.org"})


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
