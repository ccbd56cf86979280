"""reload: reload the Corefile when it changes, as CoreDNS's *reload*."""

from ._plugin import ReloadConfig, ReloadPlugin, blocks_digest, corefile_digest, parse_reload

__all__ = ["ReloadConfig", "ReloadPlugin", "blocks_digest", "corefile_digest", "parse_reload"]
