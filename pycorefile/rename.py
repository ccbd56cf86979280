"""Changing the names of a reply, one record at a time: for plugins that rewrite questions.

A plugin that asks the rest of the chain another question than the client's
(*rewrite*, the *rename* example) gives the client its reply under the
question it asked: the question put back, and owner names and the names in
record data mapped back. These are the pure helpers for that, on dnspython
messages; nothing here does I/O.

- ``Record`` is one resource record of a reply, with its section, owner, TTL
  and data, to change freely; ``records(msg)`` lists them (authority, answer,
  additional: the order CoreDNS's rewrite visits them) and
  ``set_records(msg, records)`` puts them back, records of one owner, class
  and type that follow each other forming one RRset again.
- ``map_names(msg, owner=..., value=...)`` maps every owner name and every
  name in the data of the types in ``NAME_FIELDS``.
- ``restore_question(msg, name, rdtype, rdclass)`` puts the client's question back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = [
    "ADDITIONAL",
    "ANSWER",
    "AUTHORITY",
    "NAME_FIELDS",
    "Record",
    "map_names",
    "records",
    "restore_question",
    "set_records",
]

ANSWER, AUTHORITY, ADDITIONAL = 1, 2, 3
"""A record's section, as dnspython numbers them."""

NAME_FIELDS: Mapping[int, tuple[str, ...]] = {
    dns.rdatatype.CNAME: ("target",),
    dns.rdatatype.DNAME: ("target",),
    dns.rdatatype.NS: ("target",),
    dns.rdatatype.PTR: ("target",),
    dns.rdatatype.MX: ("exchange",),
    dns.rdatatype.SRV: ("target",),
    dns.rdatatype.NAPTR: ("replacement",),
    dns.rdatatype.SOA: ("mname",),
}
"""The name in a record's data that CoreDNS's rewrite maps (``answer value``): one per type
(the SOA's primary server, not its mailbox)."""

NameMap = Callable[[dns.name.Name], dns.name.Name]


@dataclass
class Record:
    """One resource record of a message; change its fields and ``set_records`` it back."""

    section: int
    name: dns.name.Name
    ttl: int
    rdata: dns.rdata.Rdata

    @property
    def rdtype(self) -> int:
        return int(self.rdata.rdtype)


def records(msg: dns.message.Message) -> list[Record]:
    """Every record of the authority, answer and additional sections, in that order (the
    OPT record is not one of them)."""
    out: list[Record] = []
    for section, rrsets in (
        (AUTHORITY, msg.authority),
        (ANSWER, msg.answer),
        (ADDITIONAL, msg.additional),
    ):
        for rrset in rrsets:
            out.extend(Record(section, rrset.name, rrset.ttl, rdata) for rdata in rrset)
    return out


def set_records(msg: dns.message.Message, new: Iterable[Record]) -> dns.message.Message:
    """Replace the sections' records with ``new`` (in their order; each into its section)."""
    sections: dict[int, list[dns.rrset.RRset]] = {ANSWER: [], AUTHORITY: [], ADDITIONAL: []}
    for record in new:
        rrsets = sections[record.section]
        rdata = record.rdata
        last = rrsets[-1] if rrsets else None
        if (
            last is None
            or last.name != record.name
            or last.rdtype != rdata.rdtype
            or last.rdclass != rdata.rdclass
            or last.ttl != record.ttl
        ):
            last = dns.rrset.RRset(record.name, rdata.rdclass, rdata.rdtype)
            rrsets.append(last)
        last.add(rdata, record.ttl)
    msg.answer, msg.authority, msg.additional = (
        sections[ANSWER],
        sections[AUTHORITY],
        sections[ADDITIONAL],
    )
    return msg


def value_name(
    rdata: dns.rdata.Rdata, fields: Mapping[int, tuple[str, ...]] = NAME_FIELDS
) -> dns.name.Name | None:
    """The (first) name in a record's data that ``fields`` lists, or None."""
    names = fields.get(rdata.rdtype, ())
    return getattr(rdata, names[0]) if names else None


def map_names(
    msg: dns.message.Message,
    owner: NameMap | None = None,
    value: NameMap | None = None,
    fields: Mapping[int, tuple[str, ...]] = NAME_FIELDS,
) -> dns.message.Message:
    """Every owner name through ``owner`` and every name of ``fields`` in record data through
    ``value`` (None leaves them), in place; the question is not changed."""
    changed = []
    for record in records(msg):
        if owner is not None:
            record.name = owner(record.name)
        names = fields.get(record.rdtype, ()) if value is not None else ()
        if names:
            assert value is not None
            record.rdata = record.rdata.replace(
                **{field: value(getattr(record.rdata, field)) for field in names}
            )
        changed.append(record)
    return set_records(msg, changed)


def restore_question(
    msg: dns.message.Message, name: dns.name.Name, rdtype: int, rdclass: int
) -> dns.message.Message:
    """The message's question made ``name`` (letter case as given), ``rdtype``, ``rdclass``."""
    msg.question = [
        dns.rrset.RRset(
            name, dns.rdataclass.RdataClass.make(rdclass), dns.rdatatype.RdataType.make(rdtype)
        )
    ]
    return msg
