"""What a ``rename`` line says, and how names change both ways: pure functions, no I/O.

``parse_rename`` turns the block's ``rename FROM TO`` lines into a
``RenameConfig``; a ``Rule`` maps a question name from FROM to TO and the
names of the reply back; ``rename_reply`` applies it to a reply. All of it is
testable without a server.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from pycorefile import Directive, SetupError, check_args
from pycorefile.rename import map_names


@dataclass(frozen=True)
class Rule:
    """Names at or under ``source`` are asked as the same names under ``target``."""

    source: dns.name.Name
    target: dns.name.Name

    @cached_property
    def source_wire(self) -> bytes:
        """``source`` in wire form (lowercase)."""
        return self.source.to_wire() or b""

    @cached_property
    def target_wire(self) -> bytes:
        """``target`` in wire form (lowercase)."""
        return self.target.to_wire() or b""

    @cached_property
    def target_labels(self) -> list[bytes]:
        """``target``'s labels in wire form (length byte included), the root's excluded."""
        name = self.target_wire
        return [name[start:end] for start, end in itertools.pairwise(label_offsets(name))]

    def covers(self, name_wire: bytes) -> bool:
        """True for a lowercased wire name at or under source (compared as bytes).

        ``request.qname_wire.lower()`` is the question in this form: no
        dnspython, no text, so a name that is not renamed costs next to nothing.
        (Wire names are compared lowercased, as DNS compares names.)
        """
        suffix = self.source_wire
        if not name_wire.endswith(suffix):  # most names stop here
            return False
        start, pos = len(name_wire) - len(suffix), 0
        while pos < start:  # the suffix must begin at a label, not inside one
            pos += name_wire[pos] + 1
        return pos == start

    def forward(self, name_wire: bytes) -> bytes | None:
        """A wire name covered by source, under target instead (its other labels as they
        are, letter case included); None when that would be longer than 255 bytes."""
        renamed = name_wire[: len(name_wire) - len(self.source_wire)] + self.target_wire
        return renamed if len(renamed) <= 255 else None

    def back(self, name: dns.name.Name) -> dns.name.Name:
        """A reply's name under target, back under source (other names as they are)."""
        if not name.is_subdomain(self.target):
            return name
        try:
            return name.relativize(self.target).derelativize(self.source)
        except dns.name.NameTooLong:
            return name  # cannot be said under source: left as the rest of the chain said it


@dataclass(frozen=True)
class RenameConfig:
    """Every ``rename`` line of one server block, the most specific FROM first."""

    rules: tuple[Rule, ...]

    def rule_for(self, name_wire: bytes) -> Rule | None:
        """The rule for a lowercased wire name, or None when no FROM covers it."""
        for rule in self.rules:
            if rule.covers(name_wire):
                return rule
        return None


def label_offsets(name_wire: bytes) -> list[int]:
    """The offset of every label of an uncompressed wire name, the root's included."""
    offsets, position = [], 0
    while True:
        offsets.append(position)
        if name_wire[position] == 0:
            return offsets
        position += name_wire[position] + 1


def parse_rename(directives: Sequence[Directive]) -> RenameConfig:
    """``rename FROM TO``, once or more per block; a mistake points at its argument."""
    rules: dict[dns.name.Name, Rule] = {}
    for directive in directives:
        check_args(directive, 2, 2)
        if directive.block is not None:
            raise SetupError("rename takes no block", directive)
        source, target = _name(directive, 0), _name(directive, 1)
        if source == target:
            raise SetupError(f"{directive.args[0]} is renamed to itself", directive, 1)
        if source in rules:
            raise SetupError(
                f"{directive.args[0]} is already renamed to {rules[source].target}", directive, 0
            )
        rules[source] = Rule(source, target)
    ordered = sorted(rules.values(), key=lambda rule: len(rule.source), reverse=True)
    return RenameConfig(tuple(ordered))


def _name(directive: Directive, index: int) -> dns.name.Name:
    text = directive.args[index]
    try:
        return dns.name.from_text(text).canonicalize()
    except dns.exception.DNSException as exc:
        raise SetupError(f"invalid domain name {text!r}: {exc}", directive, index) from None


def rename_reply(
    msg: dns.message.Message, rule: Rule, asked: dns.name.Name, renamed: dns.name.Name
) -> dns.message.Message:
    """The reply to ``renamed`` turned into the reply to ``asked``, changed in place.

    The question, every owner name and every name in the data of NS, CNAME,
    PTR, MX and SOA records that is under the rule's target go back under its
    source; the renamed question itself becomes ``asked`` exactly, letter case
    included. Other names stay as they are. (``pycorefile.rename`` changes the
    records one by one.)
    """

    def back(name: dns.name.Name) -> dns.name.Name:
        return asked if name == renamed else rule.back(name)

    msg.question = [
        dns.rrset.RRset(back(question.name), question.rdclass, question.rdtype)
        for question in msg.question
    ]
    return map_names(msg, owner=back, value=back, fields=NAME_FIELDS)


NAME_FIELDS: dict[int, tuple[str, ...]] = {
    dns.rdatatype.NS: ("target",),
    dns.rdatatype.CNAME: ("target",),
    dns.rdatatype.PTR: ("target",),
    dns.rdatatype.MX: ("exchange",),
    dns.rdatatype.SOA: ("mname", "rname"),
}
"""The names in a record's data that are renamed back (those the wire may compress)."""
