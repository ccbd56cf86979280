"""Check the kubernetes plugin against a real cluster, through a kubeconfig.

    python3 bench/kubernetes_cluster_check.py KUBECONFIG [CLUSTER_DOMAIN]

The suite tests the plugin against an API server emulator on loopback; this
script asks a real cluster's API the same kind of questions (the API Service
by name and by address, dns-version, a missing Service) and exits 1 on the
first wrong answer. No cluster is reachable from the machines the suite runs
on, so it is run by hand.
"""

from __future__ import annotations

import sys

import dns.rcode
import trio

from pycorefile.testing import query, serve


async def check(kubeconfig: str, domain: str) -> None:
    text = (
        f"{domain}:0 in-addr.arpa:0 {{\n    bind 127.0.0.1\n"
        f"    kubernetes {domain} in-addr.arpa {{\n        kubeconfig {kubeconfig}\n"
        "        startup_timeout 30s\n    }\n}\n"
    )
    async with serve(text) as server:
        api = await query(server, f"kubernetes.default.svc.{domain}.", "A")
        if api.rcode() != dns.rcode.NOERROR or not api.answer:
            raise SystemExit(f"the API Service has no address:\n{api.to_text()}")
        ip = api.answer[0][0].to_text()
        reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa."
        ptr = await query(server, reverse, "PTR")
        if not ptr.answer or ptr.answer[0][0].to_text() != f"kubernetes.default.svc.{domain}.":
            raise SystemExit(f"wrong PTR for {ip}:\n{ptr.to_text()}")
        version = await query(server, f"dns-version.{domain}.", "TXT")
        if not version.answer or version.answer[0][0].to_text() != '"1.1.0"':
            raise SystemExit(f"wrong dns-version:\n{version.to_text()}")
        missing = await query(server, f"no-such-service.default.svc.{domain}.", "A")
        if missing.rcode() != dns.rcode.NXDOMAIN:
            raise SystemExit(f"a missing Service is not NXDOMAIN:\n{missing.to_text()}")
    print(f"ok: {ip} is kubernetes.default.svc.{domain}.")


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    domain = (sys.argv[2] if len(sys.argv) == 3 else "cluster.local").rstrip(".")
    trio.run(check, sys.argv[1], domain)


if __name__ == "__main__":
    main()
