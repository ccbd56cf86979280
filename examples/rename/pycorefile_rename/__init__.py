"""rename: asks the rest of the chain for a renamed question and renames the reply back.

A complete third-party pycorefile plugin: an entry point in ``pyproject.toml``,
a pure parse function and the renaming of names (``rules.py``), the same
renaming done on wire bytes for the usual reply (``wire.py``), and a plugin
class written against the serving contract (``plugin.py``) that passes a
renamed copy of the request on and changes what comes back with ``then``,
whether the rest of the chain answers now or has to wait.
"""

from .plugin import RenamePlugin
from .rules import RenameConfig, Rule, parse_rename, rename_reply
from .wire import rename_wire

__all__ = ["RenameConfig", "RenamePlugin", "Rule", "parse_rename", "rename_reply", "rename_wire"]
