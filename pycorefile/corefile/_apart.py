"""Parsing a Corefile in a child process, so the server never holds the parser.

The grammar, lark and its tables cost about 5 MB that a server needs only
while it reads its Corefile. ``parse_corefile_apart`` runs ``parse_corefile``
in ``python -m pycorefile.corefile`` and gets back the same blocks or the same
``CorefileError`` (both are plain data, sent pickled over a pipe between two
processes of ours).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Mapping

from ._model import CorefileError, ServerBlock

CHILD_TIMEOUT = 60.0
"""Seconds a child may take to parse (a Corefile importing thousands of files)."""


def parse_corefile_apart(
    text: str, filename: str = "Corefile", *, env: Mapping[str, str] | None = None
) -> list[ServerBlock]:
    """``parse_corefile`` in a child process: same result, same errors, none of its memory."""
    request = pickle.dumps((text, filename, dict(os.environ if env is None else env)))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pycorefile.corefile"],
            input=request,
            capture_output=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = f"cannot parse the Corefile in a child process: {exc}"
        raise CorefileError(problem, filename) from None
    if done.returncode != 0 or not done.stdout:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"exit status {done.returncode}"
        raise CorefileError(f"cannot parse the Corefile in a child process: {reason}", filename)
    result = pickle.loads(done.stdout)
    if isinstance(result, CorefileError):
        raise result
    assert isinstance(result, list)
    return result
