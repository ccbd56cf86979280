"""The capture rules as text: pure functions of the options, no root needed."""

from __future__ import annotations

import ipaddress
import json

import pytest

from pycorefile.capture._rules import (
    CaptureError,
    CaptureOptions,
    install_warnings,
    iptables_install_input,
    iptables_remove_input,
    iptables_rules,
    listener_serves,
    nat_is_empty,
    nft_install_script,
    nft_remove_script,
    nft_rules,
    normalize_save,
    parse_iptables_save,
    parse_nft_json,
    parse_proc_net,
    parse_resolv_conf,
)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# --- options -------------------------------------------------------------------------------


def test_an_exclusion_is_required_because_otherwise_pycorefile_loops() -> None:
    with pytest.raises(CaptureError, match="loop back to itself"):
        CaptureOptions()


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_must_be_a_port(port: int) -> None:
    with pytest.raises(CaptureError, match="not between 1 and 65535"):
        CaptureOptions(port=port, exclude_uids=(1,))


def test_empty_destination_list_is_refused() -> None:
    with pytest.raises(CaptureError, match="no name server"):
        CaptureOptions(exclude_uids=(1,), destinations=())


# --- nftables ------------------------------------------------------------------------------


def test_default_table_captures_udp_and_tcp_of_both_families() -> None:
    script = nft_install_script(CaptureOptions(exclude_uids=(15053,)))
    assert script == (
        "table inet pycorefile\n"
        "delete table inet pycorefile\n"
        "table ip pycorefile\n"
        "delete table ip pycorefile\n"
        "table inet pycorefile {\n"
        "\tchain output {\n"
        "\t\ttype nat hook output priority -110; policy accept;\n"
        "\t\tmeta skuid 15053 return\n"
        "\t\tmeta nfproto ipv4 udp dport 53 counter redirect to :15053\n"
        "\t\tmeta nfproto ipv4 tcp dport 53 counter redirect to :15053\n"
        "\t\tmeta nfproto ipv6 udp dport 53 counter redirect to :15053\n"
        "\t\tmeta nfproto ipv6 tcp dport 53 counter redirect to :15053\n"
        "\t}\n"
        "}\n"
    )


def test_the_rules_are_canonical_whatever_the_order_of_the_options() -> None:
    one = CaptureOptions(exclude_uids=(7, 3, 7), exclude_gids=(9,), port=1053)
    other = CaptureOptions(exclude_uids=(3, 7), exclude_gids=(9, 9), port=1053)
    assert nft_install_script(one) == nft_install_script(other)
    assert nft_rules(one)[:2] == ["meta skuid { 3, 7 } return", "meta skgid 9 return"]
    assert nft_rules(one)[2].endswith("redirect to :1053")


def test_exclusions_come_before_every_redirect() -> None:
    rules = nft_rules(CaptureOptions(exclude_uids=(1,), exclude_gids=(2,)))
    assert [r.endswith("return") for r in rules] == [True, True] + [False] * 4


def test_only_the_name_servers_per_family() -> None:
    options = CaptureOptions(
        exclude_gids=(5,),
        destinations=(ip("10.96.0.10"), ip("fd00::a"), ip("10.0.0.2")),
    )
    assert nft_rules(options) == [
        "meta skgid 5 return",
        "ip daddr { 10.0.0.2, 10.96.0.10 } udp dport 53 counter redirect to :15053",
        "ip daddr { 10.0.0.2, 10.96.0.10 } tcp dport 53 counter redirect to :15053",
        "ip6 daddr fd00::a udp dport 53 counter redirect to :15053",
        "ip6 daddr fd00::a tcp dport 53 counter redirect to :15053",
    ]


def test_ipv4_name_servers_only_leave_ipv6_alone() -> None:
    options = CaptureOptions(exclude_uids=(1,), destinations=(ip("10.96.0.10"),))
    assert not any("ip6" in rule or "ipv6" in rule for rule in nft_rules(options))
    assert iptables_rules(options, 6) == []


def test_ipv4_only_uses_an_ip_table_without_family_tests() -> None:
    options = CaptureOptions(exclude_uids=(1,), ipv6=False)
    script = nft_install_script(options)
    assert "table ip pycorefile {" in script
    assert "table inet pycorefile {" not in script
    assert nft_rules(options)[1:] == [
        "udp dport 53 counter redirect to :15053",
        "tcp dport 53 counter redirect to :15053",
    ]


def test_install_replaces_a_table_of_either_family_in_one_transaction() -> None:
    # Switching between inet and ip (IPv4 only) must not leave the other table behind.
    for ipv6 in (True, False):
        script = nft_install_script(CaptureOptions(exclude_uids=(1,), ipv6=ipv6))
        assert script.startswith(nft_remove_script())
        assert script.count("{") == 2  # one table, one chain: nothing else is created


def test_remove_deletes_only_the_capture_tables() -> None:
    assert nft_remove_script() == (
        "table inet pycorefile\ndelete table inet pycorefile\n"
        "table ip pycorefile\ndelete table ip pycorefile\n"
    )


# The shape `nft -j list table inet pycorefile` prints (nftables 1.0.6), trimmed.
NFT_JSON = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "pycorefile", "handle": 2}},
        {"chain": {"family": "inet", "table": "pycorefile", "name": "output", "hook": "output"}},
        {
            "rule": {
                "expr": [
                    {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 15053}},
                    {"return": None},
                ]
            }
        },
        {
            "rule": {
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"meta": {"key": "skgid"}},
                            "right": {"set": [998, 15053]},
                        }
                    },
                    {"return": None},
                ]
            }
        },
        {
            "rule": {
                "expr": [
                    {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}},
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "udp", "field": "dport"}},
                            "right": 53,
                        }
                    },
                    {"counter": {"packets": 4, "bytes": 200}},
                    {"redirect": {"port": 15053}},
                ]
            }
        },
        {
            "rule": {
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                            "right": "fd00::a",
                        }
                    },
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                            "right": 53,
                        }
                    },
                    {"counter": {"packets": 1, "bytes": 60}},
                    {"redirect": {"port": 15053}},
                ]
            }
        },
    ]
}


def test_reading_the_installed_nft_table() -> None:
    installed = parse_nft_json(json.dumps(NFT_JSON), "rules")
    assert installed is not None
    assert installed.where == "nftables table inet pycorefile"
    assert installed.uids == (15053,)
    assert installed.gids == (998, 15053)
    assert installed.ports == (15053,)
    assert installed.versions == (4, 6)
    udp, tcp = installed.redirects
    assert (udp.version, udp.protocol, udp.destinations, udp.packets) == (4, "udp", None, 4)
    assert (tcp.version, tcp.protocol, tcp.destinations, tcp.packets) == (6, "tcp", ("fd00::a",), 1)


def test_no_table_reads_as_nothing() -> None:
    assert parse_nft_json(json.dumps({"nftables": [{"metainfo": {}}]})) is None


# --- iptables ------------------------------------------------------------------------------

FRESH_SAVE = """\
# Generated by iptables-save v1.8.9 (nf_tables) on Sun Nov 22 08:41:28 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:5353
COMMIT
# Completed on Sun Nov 22 08:41:28 2026
"""

INSTALLED_SAVE = """\
*filter
:OUTPUT ACCEPT [10:600]
[3:180] -A OUTPUT -p tcp -m tcp --dport 9 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [12:700]
:POSTROUTING ACCEPT [0:0]
:PYCOREFILE_OUTPUT - [0:0]
[9:540] -A OUTPUT -j PYCOREFILE_OUTPUT
[0:0] -A OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:5353
[2:120] -A PYCOREFILE_OUTPUT -m owner --uid-owner 15053 -j RETURN
[5:300] -A PYCOREFILE_OUTPUT -d 10.96.0.10/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053
[1:60] -A PYCOREFILE_OUTPUT -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053
COMMIT
"""


def test_iptables_rules_for_the_name_servers() -> None:
    options = CaptureOptions(
        exclude_uids=(15053,), exclude_gids=(15053,), destinations=(ip("fd00::a"),)
    )
    assert iptables_rules(options, 6) == [
        "-A PYCOREFILE_OUTPUT -m owner --uid-owner 15053 -j RETURN",
        "-A PYCOREFILE_OUTPUT -m owner --gid-owner 15053 -j RETURN",
        "-A PYCOREFILE_OUTPUT -d fd00::a/128 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
        "-A PYCOREFILE_OUTPUT -d fd00::a/128 -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053",
    ]


def test_iptables_install_on_a_table_without_capture() -> None:
    script = iptables_install_input(CaptureOptions(exclude_uids=(15053,)), 4, FRESH_SAVE)
    assert script.splitlines() == [
        "*nat",
        ":PYCOREFILE_OUTPUT - [0:0]",
        "-F PYCOREFILE_OUTPUT",
        "-A PYCOREFILE_OUTPUT -m owner --uid-owner 15053 -j RETURN",
        "-A PYCOREFILE_OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
        "-A PYCOREFILE_OUTPUT -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 15053",
        "-I OUTPUT 1 -j PYCOREFILE_OUTPUT",
        "COMMIT",
    ]


def test_iptables_install_again_refills_the_chain_and_keeps_the_one_jump() -> None:
    script = iptables_install_input(CaptureOptions(exclude_uids=(15053,)), 4, INSTALLED_SAVE)
    lines = script.splitlines()
    assert ":PYCOREFILE_OUTPUT - [0:0]" not in lines  # redeclaring would be an error/flush
    assert "-F PYCOREFILE_OUTPUT" in lines
    assert not any(line.startswith(("-I OUTPUT", "-D OUTPUT")) for line in lines)


def test_iptables_install_repairs_repeated_or_altered_jumps() -> None:
    save = INSTALLED_SAVE.replace(
        "[9:540] -A OUTPUT -j PYCOREFILE_OUTPUT\n",
        "-A OUTPUT -j PYCOREFILE_OUTPUT\n-A OUTPUT -p udp -j PYCOREFILE_OUTPUT\n"
        "-A OUTPUT -j PYCOREFILE_OUTPUT\n",
    )
    lines = iptables_install_input(CaptureOptions(exclude_uids=(1,)), 4, save).splitlines()
    assert lines[-5:] == [
        "-D OUTPUT -j PYCOREFILE_OUTPUT",
        "-D OUTPUT -p udp -j PYCOREFILE_OUTPUT",
        "-D OUTPUT -j PYCOREFILE_OUTPUT",
        "-I OUTPUT 1 -j PYCOREFILE_OUTPUT",
        "COMMIT",
    ]


def test_iptables_remove_takes_out_the_jump_and_the_chain_only() -> None:
    assert iptables_remove_input(INSTALLED_SAVE) == (
        "*nat\n-D OUTPUT -j PYCOREFILE_OUTPUT\n-F PYCOREFILE_OUTPUT\n-X PYCOREFILE_OUTPUT\nCOMMIT\n"
    )
    assert iptables_remove_input(FRESH_SAVE) is None


def test_reading_the_installed_iptables_chain_with_counters() -> None:
    installed = parse_iptables_save(INSTALLED_SAVE, 4)
    assert installed is not None
    assert installed.uids == (15053,) and installed.gids == ()
    assert [(r.protocol, r.destinations, r.port, r.packets) for r in installed.redirects] == [
        ("udp", ("10.96.0.10",), 15053, 5),
        ("tcp", ("10.96.0.10",), 15053, 1),
    ]
    assert parse_iptables_save(FRESH_SAVE, 4) is None


def test_a_chain_without_its_jump_captures_nothing() -> None:
    save = INSTALLED_SAVE.replace("[9:540] -A OUTPUT -j PYCOREFILE_OUTPUT\n", "")
    installed = parse_iptables_save(save, 4)
    assert installed is not None
    assert installed.redirects == ()
    assert "does not jump" in installed.notes[0]


def test_nat_emptiness() -> None:
    assert nat_is_empty("*filter\nCOMMIT\n")
    assert nat_is_empty("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [4:5]\nCOMMIT\n")
    assert not nat_is_empty(FRESH_SAVE)
    assert not nat_is_empty("*nat\n:OUTPUT DROP [0:0]\nCOMMIT\n")
    assert not nat_is_empty("*nat\n:OUTPUT ACCEPT [0:0]\n:MINE - [0:0]\nCOMMIT\n")


def test_normalized_save_ignores_timestamps_and_counters() -> None:
    later = FRESH_SAVE.replace("08:41:28", "09:00:00").replace(
        ":OUTPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [7:420]"
    )
    assert normalize_save(later) == normalize_save(FRESH_SAVE)
    assert "# Generated" not in normalize_save(FRESH_SAVE)


# --- resolv.conf and warnings --------------------------------------------------------------


def test_resolv_conf_name_servers() -> None:
    text = (
        "# written by a DHCP client\n"
        "search svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10  # kube-dns\n"
        "nameserver fe80::1%eth0\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
        ";nameserver 192.0.2.1\n"
    )
    assert parse_resolv_conf(text) == (ip("10.96.0.10"), ip("fe80::1"))


def test_resolv_conf_errors_name_the_line() -> None:
    with pytest.raises(CaptureError, match=r"resolv.conf:2: nameserver 'dns.example'"):
        parse_resolv_conf("search x\nnameserver dns.example\n")
    with pytest.raises(CaptureError, match="no nameserver lines"):
        parse_resolv_conf("search x\n")


def test_warnings_for_root_exclusion_and_a_local_resolver() -> None:
    assert install_warnings(CaptureOptions(exclude_uids=(15053,))) == []
    root = install_warnings(CaptureOptions(exclude_uids=(0,), exclude_gids=(0,)))
    assert "every process running as root bypasses capture" in root[0]
    assert "group root" in root[1]
    local = install_warnings(CaptureOptions(exclude_uids=(9,)), [ip("127.0.0.53")])
    assert "127.0.0.53" in local[0] and "loop" in local[0]
    # Capturing only the resolv.conf servers does not capture the local resolver's upstream.
    narrow = CaptureOptions(exclude_uids=(9,), destinations=(ip("127.0.0.53"),))
    assert install_warnings(narrow, [ip("127.0.0.53")]) == []


# --- /proc/net -----------------------------------------------------------------------------

PROC_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 0100007F:3ACD 00000000:0000 07 00000000:00000000 00:00000000 00000000 15053        0 4242 2 0000000000000000 0
  101: 0100007F:C350 0200007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0
  102: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   999        0 4244 2 0000000000000000 0
"""  # noqa: E501

PROC_UDP6 = """\
   sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  200: 00000000000000000000000001000000:3ACD 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000 15053        0 5151 2 0000000000000000 0
"""  # noqa: E501


def test_listeners_from_proc_net() -> None:
    (v4,) = parse_proc_net(PROC_UDP, 15053)
    assert (v4.address, v4.uid, v4.inode) == (ip("127.0.0.1"), 15053, 4242)
    (v6,) = parse_proc_net(PROC_UDP6, 15053)
    assert (v6.address, v6.uid) == (ip("::1"), 15053)
    (wildcard,) = parse_proc_net(PROC_UDP, 53)  # the connected socket (state 01) is not one
    assert wildcard.address == ip("0.0.0.0") and wildcard.uid == 999
    assert listener_serves(wildcard, ip("127.0.0.53"))
    assert not listener_serves(wildcard, ip("::1"))
    assert listener_serves(v4, ip("127.0.0.1")) and not listener_serves(v4, ip("127.0.0.2"))
