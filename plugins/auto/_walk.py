"""Finding zone files in a directory (blocking: run it in a worker thread)."""

from __future__ import annotations

import logging
import os

from ._parse import AutoConfig

log = logging.getLogger("pycorefile")


def scan(config: AutoConfig) -> dict[str, str]:
    """Origin → zone file path for every file below the directory whose name matches.

    As CoreDNS's walk: the directory is resolved if it is a symlink (a
    Kubernetes ConfigMap mount), then walked recursively without following
    symlinked subdirectories; the base name is matched; when two files give
    one origin, the first seen wins and a warning names both.
    """
    if not config.directory:
        return {}
    root = os.path.realpath(config.directory)
    found: dict[str, str] = {}

    def warn(error: OSError) -> None:
        log.warning("plugin/auto: error reading %s: %s", error.filename, error.strerror)

    for dirpath, dirnames, filenames in os.walk(root, onerror=warn, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            origin = config.origin_for(name)
            if origin is None:
                continue
            path = os.path.normpath(os.path.join(dirpath, name))
            previous = found.get(origin)
            if previous is not None and previous != path:
                log.warning(
                    "plugin/auto: Multiple zone files match origin %r: using %r instead of %r",
                    origin, previous, path,
                )  # fmt: skip
                continue
            found[origin] = path
    return found
