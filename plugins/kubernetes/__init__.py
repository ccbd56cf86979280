"""kubernetes: cluster DNS (Services, endpoints, pods) from the Kubernetes API, as CoreDNS."""

from ._parse import KubernetesConfig, parse_kubernetes
from ._plugin import KubernetesPlugin

__all__ = ["KubernetesConfig", "KubernetesPlugin", "parse_kubernetes"]
