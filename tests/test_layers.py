"""The package's import structure: no cycle, layers import only downward, commands load lazily.

The imports are read from the source with ``ast`` (every ``import`` statement, function-level
ones included), so an import hidden inside a function counts like one at the top of a module.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from facenet_evc import cli

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "facenet_evc"

# data -> stages / evaluation -> models -> training -> inference / analysis -> cli. A module may
# import its own layer or a lower one. The base (io, config, ablations) is below everything.
LAYERS = {
    "io": 0, "config": 0, "ablations": 0, "layout": 0, "errors": 0, "progress": 0,
    "data": 1,
    "stages": 2, "evaluation": 2,
    "models": 3,
    "training": 4,
    "inference": 5, "analysis": 5,
    "commands": 6, "cli": 6, "__main__": 6,
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: the package modules it imports}``, every import statement of the file counted."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        resolved = set()
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("facenet_evc"):
                resolved.add(t)
        graph[name] = resolved
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_the_checker_finds_a_cycle_and_a_function_level_import(tmp_path):
    pkg = tmp_path / "facenet_evc"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from facenet_evc.a import y\n")
    (pkg / "a" / "y.py").write_text("def f():\n    from .x import g\n")
    graph = import_graph(pkg)
    assert graph["facenet_evc.a.y"] == {"facenet_evc.a.x"}
    assert cycles(graph) == [["facenet_evc.a.x", "facenet_evc.a.y"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_layers_import_only_downward():
    graph = import_graph()
    unplaced = sorted(m for m in graph if m != "facenet_evc" and layer(m) is None)
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"
    upward = sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                    if layer(m) is not None and layer(t) is not None and layer(t) > layer(m))
    assert not upward, upward


def test_cli_is_imported_by_nothing_in_the_package():
    importers = sorted(m for m, ts in import_graph().items() if "facenet_evc.cli" in ts)
    assert importers == ["facenet_evc.__main__"]


def test_every_registered_command_resolves():
    for name, cmd in cli.COMMANDS.items():
        add, run = cmd.load()
        assert callable(add) and callable(run), name


@pytest.mark.parametrize("argv", [["--help"], ["evaluate", "--help"], ["metrics-table", "--help"]])
def test_help_loads_no_heavy_module(argv):
    """``--help`` of the package and of a light command loads no deep-learning stack, and the
    package's ``--help`` no command module at all."""
    code = ("import sys\nfrom facenet_evc.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'open_clip', 'faiss', 'transformers', 'facenet_evc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = ast.literal_eval(out.stdout.rsplit("LOADED ", 1)[1])
    assert not [m for m in loaded if not m.startswith("facenet_evc")], loaded
    if argv == ["--help"]:
        assert loaded == ["facenet_evc", "facenet_evc.cli", "facenet_evc.errors"]
