"""docs/compatibility.md lists every CoreDNS plugin in chain order with its true state,
and a Corefile naming a CoreDNS plugin we lack is told so, at the directive."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pycorefile import CorefileError, load_config
from pycorefile._app import default_registry
from pycorefile._registry import COMPATIBILITY_DOC, ORDER, OWN_PLUGINS, coredns_plugins

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (\d+) \| ([a-z0-9_]+) \| ([^|]+?) \|")
STATES = ("supported", "differs", "planned (issue ", "not planned")


def rows() -> list[tuple[int, str, str]]:
    text = (ROOT / COMPATIBILITY_DOC).read_text()
    found = [ROW.match(line) for line in text.splitlines()]
    return [(int(m[1]), m[2], m[3]) for m in found if m]


def test_every_coredns_plugin_is_listed_in_chain_order() -> None:
    listed = rows()
    assert [name for _n, name, _s in listed] == list(coredns_plugins())
    assert [n for n, _name, _s in listed] == list(range(1, len(listed) + 1))
    assert len(listed) == 60 and not OWN_PLUGINS & {name for _n, name, _s in listed}
    assert set(ORDER) == set(coredns_plugins()) | OWN_PLUGINS


def test_each_state_matches_what_is_installed() -> None:
    registry = default_registry()
    wrong = []
    for _n, name, state in rows():
        assert state.startswith(STATES), f"{name}: unknown state {state!r}"
        there = state in ("supported", "differs")
        # multisocket is a command-line flag here, not a directive.
        if name != "multisocket" and there != (name in registry):
            wrong.append(f"{name} is {'' if name in registry else 'not '}installed: {state!r}")
    assert not wrong, f"update {COMPATIBILITY_DOC}: {wrong}"


def missing() -> list[str]:
    return [name for name in coredns_plugins() if name not in default_registry()]


@pytest.mark.parametrize("name", missing())
def test_a_missing_coredns_plugin_is_named_as_such_at_its_position(name: str) -> None:
    with pytest.raises(CorefileError) as info:
        load_config(f".:53 {{\n    whoami\n    {name} some args\n}}\n")
    assert str(info.value).startswith(
        f"Corefile:3:5 - Unknown directive '{name}': a CoreDNS plugin that pycorefile "
        f"does not have (see {COMPATIBILITY_DOC})"
    )


def test_an_unknown_name_is_only_unknown() -> None:
    with pytest.raises(CorefileError) as info:
        load_config(".:53 {\n    whoami\n    nosuchplugin\n}\n")
    assert str(info.value).splitlines()[0] == "Corefile:3:5 - Unknown directive 'nosuchplugin'"
