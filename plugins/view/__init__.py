"""view: server blocks that serve only the queries an expression admits (split DNS)."""

from ._expr import ExpressionError, compile_expression
from ._parse import ViewConfig, parse_view
from ._plugin import ViewPlugin

__all__ = ["ExpressionError", "ViewConfig", "ViewPlugin", "compile_expression", "parse_view"]
