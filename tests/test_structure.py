"""The package's shape: no import cycles between its modules, so each can be read, tested and reused alone."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sora_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """The sora_cli modules a file imports, at its top or inside its functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sora_cli")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("sora_cli"):
                submodules = {f"{base}.{a.name}" for a in node.names} & MODULES  # `from . import x`
                found |= submodules or {base}
    return {m for m in found if m in MODULES and m != name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_the_graph_sees_imports_of_every_kind():
    edges = graph()
    assert "sora_cli.clips" in edges["sora_cli.cli.runner"]  # imported inside a function
    assert "sora_cli.settings" in edges["sora_cli.request"]  # `from . import settings as table`
    assert "sora_cli.cli.options" in edges["sora_cli.cli.generate"]  # `from .options import ...` in a package
    assert "sora_cli.video" in edges["sora_cli.mp4"]  # `from .video import ...`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    assert cycles(graph()) == []



def test_every_module_reads_in_one_sitting():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) >= 400}
    assert long == {}
