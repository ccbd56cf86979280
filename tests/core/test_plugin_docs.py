"""Every built-in plugin has a reference a reader can find.

Each ``plugins/NAME/README.md`` has the sections of a CoreDNS plugin README
plus the one the charter asks for ("Differences from CoreDNS"), and the
repository's README.md links it from its Documentation list.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
SECTIONS = ("Name", "Description", "Syntax", "Examples", "Differences from CoreDNS")

PLUGIN_NAMES = sorted(p.name for p in PLUGINS.iterdir() if (p / "__init__.py").is_file())


def headings(markdown: str) -> list[str]:
    """The ``##`` headings of a Markdown text, outside fenced code blocks."""
    found: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        stripped = line.strip()
        marker = stripped[:3]
        if marker in ("```", "~~~"):
            if fence is None:
                fence = marker
            elif marker == fence:
                fence = None
            continue
        if fence is None and line.startswith("## "):
            found.append(line[3:].strip())
    return found


def documentation_section(readme: str) -> str:
    """The text of README.md's "## Documentation" section."""
    match = re.search(r"^## Documentation\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match is not None, "README.md has no '## Documentation' section"
    return match.group(1)


def test_the_plugins_are_found() -> None:
    assert len(PLUGIN_NAMES) >= 30
    assert "cache" in PLUGIN_NAMES and "meshhosts" in PLUGIN_NAMES


@pytest.mark.parametrize("name", PLUGIN_NAMES)
def test_each_plugin_readme_has_the_reference_sections(name: str) -> None:
    readme = PLUGINS / name / "README.md"
    assert readme.is_file(), f"plugins/{name} has no README.md"
    found = headings(readme.read_text(encoding="utf-8"))
    missing = [section for section in SECTIONS if section not in found]
    assert not missing, f"plugins/{name}/README.md lacks the sections {missing}"


def test_headings_inside_code_blocks_do_not_count() -> None:
    text = "## Name\n~~~ txt\n## Syntax\n~~~\n```\n## Examples\n```\n## Description\n"
    assert headings(text) == ["Name", "Description"]


@pytest.mark.parametrize("name", PLUGIN_NAMES)
def test_each_plugin_readme_is_linked_from_the_documentation_list(name: str) -> None:
    section = documentation_section((ROOT / "README.md").read_text(encoding="utf-8"))
    assert f"(plugins/{name}/README.md)" in section, (
        f"README.md's Documentation list does not link plugins/{name}/README.md"
    )


def test_every_link_of_the_documentation_list_exists() -> None:
    section = documentation_section((ROOT / "README.md").read_text(encoding="utf-8"))
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", section)
    assert targets
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing, f"README.md's Documentation list links missing files: {missing}"


def toolkit_rows() -> list[tuple[str, str]]:
    """docs/plugins.md's toolkit table: (module, what the row says of it)."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text.split("## The toolkit", 1)[1]
    return re.findall(r"^\| `(pycorefile[\w.]*)` \| (.*) \|$", section, re.M)


def test_the_toolkit_lists_every_public_module() -> None:
    listed = {module for module, _ in toolkit_rows()}
    public = {
        f"pycorefile.{path.stem}"
        for path in (ROOT / "pycorefile").glob("*.py")
        if not path.stem.startswith("_") and path.stem not in ("cli",)
    } | {"pycorefile", "pycorefile.corefile"}
    assert public <= listed, f"docs/plugins.md's toolkit lacks {sorted(public - listed)}"


@pytest.mark.parametrize(
    ("module_name", "row"), toolkit_rows(), ids=[module for module, _ in toolkit_rows()]
)
def test_the_names_the_toolkit_gives_are_exported(module_name: str, row: str) -> None:
    """A name the toolkit row gives that the module has is in its ``__all__``."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    named = re.findall(r"`([A-Za-z_]\w*)(?:\(|`)", row)
    present = [
        name
        for name in named
        if hasattr(module, name) and not inspect.ismodule(getattr(module, name))
    ]
    assert present, f"the toolkit row of {module_name} names nothing it has"
    missing = [name for name in present if name not in exported]
    assert not missing, f"{module_name} has {missing} but does not export them (__all__)"
