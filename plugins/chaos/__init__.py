"""chaos: answers CH-class TXT queries for the server's version, authors and host name."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from pycorefile import Directive, Plugin, Reply, Request, Result, SetupContext, SetupError
from pycorefile import __version__ as VERSION

DEFAULT_VERSION = f"pycorefile-{VERSION}"
DEFAULT_AUTHORS = ("The pycorefile authors",)
"""What ``authors.bind`` lists when the Corefile names no authors (CoreDNS: its OWNERS)."""
CLASS_CH = 3
TYPE_TXT = 16


@dataclass(frozen=True)
class ChaosConfig:
    version: str = DEFAULT_VERSION
    authors: tuple[str, ...] = DEFAULT_AUTHORS


def trim(text: str) -> str:
    """Cut to 255 characters, as CoreDNS does (a TXT string holds at most 255 bytes)."""
    return text if len(text) < 256 else text[:255]


def parse_chaos(directives: Sequence[Directive]) -> ChaosConfig:
    """``chaos [VERSION] [AUTHORS...]``: with two or more arguments the authors are the rest,
    de-duplicated and sorted; the version is cut to 255 characters only when alone."""
    d = directives[0]
    if d.block:
        raise SetupError(f"unknown property '{d.block[0].name}'", d.block[0])
    args = d.args
    if not args:
        return ChaosConfig(trim(DEFAULT_VERSION))
    if len(args) == 1:
        return ChaosConfig(trim(args[0]))
    return ChaosConfig(args[0], tuple(sorted({trim(a) for a in args[1:]})))


class ChaosPlugin(Plugin):
    """``version.bind``/``version.server``, ``authors.bind``, ``hostname.bind``/``id.server``
    in class CH, type TXT; everything else goes to the next plugin."""

    decides_by_question = True  # the cache after it keeps the server's fast path

    any_class = True

    def __init__(self, config: ChaosConfig) -> None:
        self.config = config

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ChaosPlugin:
        return cls(parse_chaos(directives))

    def handle(self, request: Request) -> Result:
        if request.qclass != CLASS_CH or request.qtype != TYPE_TXT:
            return self.next.handle(request)
        name = request.name
        if name in ("version.bind.", "version.server."):
            texts = [self.config.version]
        elif name == "authors.bind.":
            texts = list(self.config.authors)
            # As CoreDNS: a new order each second.
            random.Random(int(time.time())).shuffle(texts)
        elif name in ("hostname.bind.", "id.server."):
            try:
                texts = [trim(socket.gethostname() or "localhost")]
            except OSError:
                texts = ["localhost"]
        else:
            return self.next.handle(request)
        return self.answer(request, texts)

    @staticmethod
    def answer(request: Request, texts: Sequence[str]) -> Reply:
        """One TXT record per text, owned by the name as asked, class CH, TTL 0."""
        reply = request.reply()
        rrset = dns.rrset.RRset(request.qname, dns.rdataclass.CH, dns.rdatatype.TXT)
        for text in texts:
            rrset.add(
                dns.rdtypes.ANY.TXT.TXT(
                    dns.rdataclass.CH, dns.rdatatype.TXT, [text.encode("utf-8")[:255]]
                ),
                0,
            )
        reply.answer.append(rrset)
        return reply
