"""Bounded fuzzing of the request path and the Corefile loader (longer runs: fuzz/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycorefile import load_config
from pycorefile._request import Request
from pycorefile._server import Dispatcher

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


@pytest.mark.parametrize(
    ("target", "runs"), [("fuzz_request.py", 30000), ("fuzz_corefile.py", 20000)]
)
def test_coverage_guided_run_finds_no_crash(target: str, runs: int, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus" / target.removeprefix("fuzz_").removesuffix(".py"), corpus)
    out = subprocess.run(
        [
            sys.executable,
            str(FUZZ / target),
            f"-runs={runs}",
            "-max_total_time=60",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Done {runs} runs" in out.stderr or "Done" in out.stderr
    assert not list(tmp_path.glob("crash-*"))


_config = load_config(".:53 {\n    whoami\n}\n")
_dispatcher = Dispatcher(next(iter(_config.routes.values())), _config.observers)


def mutated_queries() -> st.SearchStrategy[bytes]:
    """Real queries with bytes flipped, cut or appended: close enough to reach deep code."""
    base = st.sampled_from(
        [
            dns.message.make_query("example.org", "A").to_wire(),
            dns.message.make_query(
                "a.b.example.org", "AAAA", use_edns=0, want_dnssec=True
            ).to_wire(),
        ]
    )
    return st.tuples(
        base,
        st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=6),
        st.integers(0, 70),
        st.binary(max_size=20),
    ).map(lambda t: _mutate(*t))


def _mutate(wire: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
    out = bytearray(wire)
    for pos, value in flips:
        if pos < len(out):
            out[pos] = value
    return bytes(out[: max(cut, 0)] if cut < len(out) else out) + tail


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.binary(max_size=100), mutated_queries()))
def test_request_path_answers_or_drops(data: bytes) -> None:
    for proto in ("udp", "tcp"):
        out = _dispatcher.handle(data, ("127.0.0.1", 5353), proto, ("127.0.0.1", 53))
        if out is None or isinstance(out, Request) or out == b"":
            continue
        assert out[:2] == data[:2]
        reply = dns.message.from_wire(out)
        assert reply.flags & 0x8000
