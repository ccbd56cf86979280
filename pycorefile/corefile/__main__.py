"""``python -m pycorefile.corefile``: the child that ``parse_corefile_apart`` runs."""

from __future__ import annotations

import pickle
import sys

from . import parse_corefile
from ._model import CorefileError


def child_main() -> int:
    """The child's side: (text, filename, env) pickled on stdin, the outcome on stdout."""
    text, filename, env = pickle.load(sys.stdin.buffer)
    try:
        outcome: object = parse_corefile(text, filename, env=env)
    except CorefileError as exc:
        outcome = exc
    sys.stdout.buffer.write(pickle.dumps(outcome))
    return 0


raise SystemExit(child_main())
