"""kubernetes against a real cluster, when one is reachable through a kubeconfig.

Set ``PYCOREFILE_TEST_KUBECONFIG`` (and ``PYCOREFILE_TEST_CLUSTER_DOMAIN`` when
the cluster's domain is not ``cluster.local``). Without it the test is skipped:
no cluster is reachable from the machines the suite runs on by default.
"""

from __future__ import annotations

import os

import dns.rcode
import pytest

from pycorefile.testing import query, serve

KUBECONFIG = os.environ.get("PYCOREFILE_TEST_KUBECONFIG", "")
DOMAIN = os.environ.get("PYCOREFILE_TEST_CLUSTER_DOMAIN", "cluster.local").rstrip(".")

pytestmark = pytest.mark.skipif(
    not KUBECONFIG, reason="no cluster: set PYCOREFILE_TEST_KUBECONFIG to a kubeconfig to run"
)


async def test_a_real_cluster_answers_its_api_service() -> None:
    text = (
        f"{DOMAIN}:0 in-addr.arpa:0 {{\n    bind 127.0.0.1\n"
        f"    kubernetes {DOMAIN} in-addr.arpa {{\n        kubeconfig {KUBECONFIG}\n"
        "        startup_timeout 30s\n    }\n}\n"
    )
    async with serve(text) as server:
        api = await query(server, f"kubernetes.default.svc.{DOMAIN}.", "A")
        assert api.rcode() == dns.rcode.NOERROR and api.answer, api.to_text()
        ip = api.answer[0][0].to_text()
        reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa."
        ptr = await query(server, reverse, "PTR")
        assert ptr.answer[0][0].to_text() == f"kubernetes.default.svc.{DOMAIN}.", ptr.to_text()
        version = await query(server, f"dns-version.{DOMAIN}.", "TXT")
        assert version.answer[0][0].to_text() == '"1.1.0"'
        missing = await query(server, f"no-such-service.default.svc.{DOMAIN}.", "A")
        assert missing.rcode() == dns.rcode.NXDOMAIN
