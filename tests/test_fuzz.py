"""Bounded fuzzing of the request path, the Corefile loader and the two file loaders
(mesh files, the autoalloc state file); longer runs: fuzz/."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.message
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pycorefile import load_config
from pycorefile._dispatch import Dispatcher
from pycorefile._request import Request
from pycorefile_plugins.autoalloc import AllocationState, Pool, Record
from pycorefile_plugins.autoalloc._state import StateError, decode, encode
from pycorefile_plugins.meshhosts._sources import SourceError, parse_text

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"


@pytest.mark.parametrize(
    ("target", "runs"),
    [
        ("fuzz_request.py", 30000),
        ("fuzz_corefile.py", 20000),
        ("fuzz_meshfile.py", 4000),
        ("fuzz_autoalloc_state.py", 20000),
    ],
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


# -- The file loaders: their own error and nothing else -----------------------------------

MESH_DATA = Path(__file__).resolve().parent / "plugins" / "data" / "meshhosts"
MESH_SEEDS = sorted(p.read_text() for p in MESH_DATA.iterdir())
MESH_NAMES = st.sampled_from(["f.json", "f.yaml", "f.yml", "f"])


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, small."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )


def mesh_documents() -> st.SearchStrategy[Any]:
    """Documents shaped like NameTables and manifests, with any value where one goes."""
    value = json_values()
    word = st.sampled_from(
        ["10.0.0.1", "fd00::1", "10.0.0.0/8", "240.0.0.1/32", "None", "web", "*.x.example",
         "a.example", "NONE", "DNS", "ExternalName", "2024-01-01T00:00:00Z", "."]
    )  # fmt: skip
    field = value | word | st.lists(word | value, max_size=3)

    def some_of(*names: str) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({}, optional=dict.fromkeys(names, field))

    entry = some_of("ips", "registry", "shortname", "namespace", "altHosts", "alt_hosts")
    name_table = st.fixed_dictionaries(
        {"table": st.dictionaries(word | st.text(max_size=20), entry | value, max_size=3)}
    )
    metadata = st.fixed_dictionaries(
        {"name": word | value},
        optional={"namespace": word | value, "labels": value, "annotations": value,
                  "creationTimestamp": field},
    )  # fmt: skip
    spec = some_of(
        "hosts", "addresses", "endpoints", "resolution", "clusterIP", "clusterIPs", "type",
        "externalName", "exportTo", "publishNotReadyAddresses",
    )  # fmt: skip
    manifest = st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["Service", "EndpointSlice", "ServiceEntry", "List", "X"]),
            "apiVersion": st.sampled_from(
                ["v1", "discovery.k8s.io/v1", "networking.istio.io/v1", "v1beta2", ""]
            ),
        },
        optional={
            "metadata": metadata | value,
            "spec": spec | value,
            "items": value,
            "endpoints": st.lists(some_of("addresses", "conditions", "hostname"), max_size=2),
            "addressType": word,
        },
    )
    return st.one_of(name_table, manifest, st.lists(manifest, max_size=2), value)


def rendered(doc: Any, name: str) -> str:
    if name.endswith(".json") or name == "f":
        return json.dumps(doc)
    return str(yaml.safe_dump(doc))


def mutated(seeds: list[str]) -> st.SearchStrategy[str]:
    """Real files with characters replaced, cut or appended."""
    return st.tuples(
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 3000), st.characters()), max_size=6),
        st.integers(0, 4000),
        st.text(max_size=20),
    ).map(lambda t: _mutate_text(*t))


def _mutate_text(text: str, flips: list[tuple[int, str]], cut: int, tail: str) -> str:
    chars = list(text)
    for pos, char in flips:
        if pos < len(chars):
            chars[pos] = char
    return "".join(chars[:cut]) + tail


@settings(max_examples=500, deadline=None)
@given(
    MESH_NAMES,
    st.one_of(st.text(max_size=200), mutated(MESH_SEEDS), mesh_documents()),
)
def test_mesh_file_loader_raises_only_source_error(name: str, content: Any) -> None:
    text = content if isinstance(content, str) else rendered(content, name)
    try:
        parse_text(text, name)
    except SourceError as exc:
        assert exc.file == name and exc.reason
        assert str(exc).startswith(f"{name}:{exc.line}: ")


@settings(max_examples=300, deadline=None)
@given(MESH_NAMES, mesh_documents())
def test_mesh_documents_raise_only_source_error(name: str, doc: Any) -> None:
    """Well-formed files whose content is anything: reading it raises SourceError at most."""
    try:
        parse_text(rendered(doc, name), name)
    except SourceError as exc:
        assert exc.reason


POOL = Pool(ipaddress.IPv4Network("240.240.0.0/16"), ipaddress.IPv6Network("2001:2::/48"))
GOOD_STATE = encode(
    AllocationState(
        {
            "a.example": Record("a.example", "240.240.0.1", "2001:2::1", "ns", "a", 1.7e9),
            "b.example": Record("b.example", "240.240.0.2", "2001:2::2", "ns", "b", 1.7e9, 1.8e9),
        },
        cursor=3,
        generation=2,
    ),
    POOL,
)


def state_documents() -> st.SearchStrategy[bytes]:
    """A good state without its checksum (as edited by hand), fields set to any value."""
    fields = ["format", "version", "generation", "next", "hosts"]
    host_fields = ["host", "ipv4", "ipv6", "namespace", "entry", "assigned", "released"]

    def edit(changes: list[tuple[str, Any]], host_changes: list[tuple[str, Any]]) -> bytes:
        doc = json.loads(GOOD_STATE)
        del doc["checksum"]
        doc.update(changes)
        if isinstance(doc.get("hosts"), list) and doc["hosts"]:
            first = doc["hosts"][0]
            if isinstance(first, dict):
                first.update(host_changes)
        return json.dumps(doc).encode()

    value = json_values()
    return st.builds(
        edit,
        st.lists(st.tuples(st.sampled_from(fields), value), max_size=2),
        st.lists(st.tuples(st.sampled_from(host_fields), value | st.text(max_size=30)), max_size=3),
    )


def _mutate_bytes(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for pos, byte in flips:
        if pos < len(out):
            out[pos] = byte
    return bytes(out[:cut])


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        state_documents(),
        st.builds(
            _mutate_bytes,
            st.just(GOOD_STATE),
            st.lists(st.tuples(st.integers(0, len(GOOD_STATE)), st.integers(0, 255)), max_size=4),
            st.integers(0, len(GOOD_STATE)),
        ),
    )
)
def test_state_loader_raises_only_state_error(data: bytes) -> None:
    try:
        state = decode(data)
    except StateError as exc:
        assert str(exc)
    else:
        # A state that decodes can be written back, as the server will.
        assert decode(encode(state, POOL)).records == state.records
