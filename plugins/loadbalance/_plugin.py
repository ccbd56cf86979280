"""The loadbalance plugin: CoreDNS's reordering of every NOERROR reply, cache hits included.

A ``Wrapper`` with ``on_reply``: the reply of the rest of the chain is
reordered on its way back. It also states ``on_known_reply``, the same for
the bytes of a known answer, so a block whose cache comes after it keeps the
server's fast path: a cache hit answered there is reordered too, as CoreDNS
reorders the cache's replies when loadbalance comes first in plugin.cfg.

``round_robin`` (with ``prefer``) shuffles; ``weighted`` puts one address,
picked by the weights of a weight file, first, and checks the file for
changes every ``reload`` interval in its background task.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import dns.message
import dns.rcode
import dns.rdatatype
import trio

from pycorefile import Directive, Reply, Request, SetupContext, SetupError, Wrapper

from ._parse import WEIGHTED, LoadbalanceConfig, parse_loadbalance
from ._reorder import (
    Permutation,
    Records,
    address_of,
    prefer_subnets,
    question_type,
    random_permutation,
    reorder_message,
    reorder_reply,
    round_robin,
)
from ._weights import WEIGHTED_TYPES, WeightFileError, Weights, parse_weights, weighted_order

log = logging.getLogger("pycorefile")

_AUTHORITY = 1
_TRANSFERS = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)


class LoadbalancePlugin(Wrapper):
    """Shuffles A, AAAA and MX records and puts CNAMEs first, in NOERROR replies."""

    repeatable = True

    def __init__(
        self,
        config: LoadbalanceConfig,
        permutation: Permutation = random_permutation,
        weights: Weights | None = None,
        digest: bytes = b"",
    ) -> None:
        self.config = config
        self.permutation = permutation
        self.weights = weights or Weights()
        self.digest = digest
        """The weight file's digest when it was read (changes are noticed by it)."""
        self.weighted = config.policy == WEIGHTED
        if self.weighted:
            self.plan = self._weighted
        else:
            self.plan = self._preferring if config.prefer else self._round_robin

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> LoadbalancePlugin:
        config = parse_loadbalance(directives)
        if config.policy != WEIGHTED:
            return cls(config)
        try:
            data = _read(config.weight_file)
        except OSError as exc:
            if config.reload == 0:
                raise SetupError(f"weight file open error: {exc}", config.directive, 1) from None
            log.warning(
                "plugin/loadbalance: Failed to open weight file: %s. Will try again in %gs",
                exc,
                config.reload,
            )
            return cls(config)
        try:
            weights = parse_weights(data.decode("utf-8", "replace"), config.weight_file)
        except WeightFileError as exc:
            raise SetupError(str(exc), config.directive, 1) from None
        return cls(config, weights=weights, digest=hashlib.md5(data).digest())

    # -- Orders -------------------------------------------------------------------

    def _round_robin(self, section: int, types: Sequence[int], records: Records) -> list[int]:
        return round_robin(types, self.permutation)

    def _preferring(self, section: int, types: Sequence[int], records: Records) -> list[int]:
        order = round_robin(types, self.permutation)
        if section == _AUTHORITY:
            return order  # as CoreDNS: prefer orders the answer and additional sections
        addresses = [address_of(rtype, records.rdata(i)) for i, rtype in enumerate(types)]
        return prefer_subnets(order, types, addresses, self.config.prefer)

    def _weighted(self, section: int, types: Sequence[int], records: Records) -> list[int]:
        if section == _AUTHORITY:
            return list(range(len(types)))  # as CoreDNS: answer and additional only
        return weighted_order(types, records, self.weights)

    # -- Replies --------------------------------------------------------------------

    def on_reply(self, request: Request, reply: Reply) -> Reply:
        if not self._reorders(request.qtype):
            return reply
        if isinstance(reply, dns.message.Message):
            if reply.rcode() != dns.rcode.NOERROR:
                return reply
            return reorder_message(reply, self.plan)
        return reorder_reply(bytes(reply), self.plan) if reply else reply

    def on_known_reply(self, reply: bytes) -> bytes:
        if self.weighted and question_type(reply) not in WEIGHTED_TYPES:
            return reply
        return reorder_reply(reply, self.plan)

    def _reorders(self, qtype: int) -> bool:
        if self.weighted:
            return qtype in WEIGHTED_TYPES
        return qtype not in _TRANSFERS

    # -- The weight file ------------------------------------------------------------

    async def run(self) -> None:
        """Check the weight file for changes every ``reload`` interval (weighted only)."""
        config = self.config
        if not self.weighted or config.reload <= 0:
            return
        while True:
            await trio.sleep(config.reload)
            try:
                data = await trio.to_thread.run_sync(_read, config.weight_file)
                digest = hashlib.md5(data).digest()
                if digest == self.digest:
                    continue
                self.digest = digest
                self.weights = parse_weights(data.decode("utf-8", "replace"), config.weight_file)
            except (OSError, WeightFileError) as exc:
                log.error("plugin/loadbalance: %s", exc)
                continue
            log.info("plugin/loadbalance: Successfully reloaded weight file %s", config.weight_file)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
