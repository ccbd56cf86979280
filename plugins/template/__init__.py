"""template: answers from Go templates when a regex matches the query's name, as CoreDNS's."""

from ._parse import Template, TemplateConfig, parse_template
from ._plugin import TemplatePlugin, parse_record

__all__ = ["Template", "TemplateConfig", "TemplatePlugin", "parse_record", "parse_template"]
