"""Fuzz the request path: bytes in, a well-formed reply or a drop out, never an exception."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["pycorefile", "plugins"]):
    import dns.message

    from pycorefile._app import load_config
    from pycorefile._dispatch import Dispatcher
    from pycorefile._request import Request

COREFILE = """\
.:53 {
    acl example.net {
        block type ANY
        filter type AAAA
        drop type MX
    }
    whoami
}
example.org:53 {
    whoami
}
"""

_config = load_config(COREFILE)
_routes = next(iter(_config.routes.values()))
_dispatcher = Dispatcher(_routes, _config.observers)


def check_reply(data: bytes, out: bytes | Request | None) -> None:
    """What the server would send must be a parseable reply echoing the query's ID."""
    if out is None or isinstance(out, Request) or out == b"":
        return
    reply = dns.message.from_wire(out, ignore_trailing=False)
    assert out[:2] == data[:2], "reply does not echo the query ID"
    assert reply.flags & 0x8000, "reply without QR"


def test_one_input(data: bytes) -> None:
    for proto in ("udp", "tcp"):
        out = _dispatcher.handle(data, ("127.0.0.1", 5353), proto, ("127.0.0.1", 53))
        check_reply(data, out)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
