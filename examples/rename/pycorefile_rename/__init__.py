"""rename: asks the rest of the chain for a renamed question and renames the reply back.

A complete third-party pycorefile plugin: an entry point in ``pyproject.toml``,
a pure parse function (``rules.py``) and a plugin class written against the
serving contract (``plugin.py``). The renaming itself -- the question asked
under the new name, the reply renamed back on its bytes or on the parsed
message, now or once a wait is over, and the metrics credit -- is
``pycorefile.rename``, the public helper for plugins that rewrite names.
"""

from .plugin import RenamePlugin
from .rules import RenameConfig, parse_rename

__all__ = ["RenameConfig", "RenamePlugin", "parse_rename"]
