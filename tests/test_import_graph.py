"""No import circle between the package's modules (module-level imports; pure, AST only).

Imports inside functions and under ``if TYPE_CHECKING:`` are not edges: they run at call
time (each carries a one-line reason) or never."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "selfcal_batch"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    out: set[str] = set()
    body = ast.parse(path.read_text()).body
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
            names: list[str] = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                names = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.level:
                base = _module_name(path).rsplit(".", n.level - (path.name == "__init__.py"))[0]
                mod = f"{base}.{n.module}" if n.module else base
                names = [mod] + [f"{mod}.{a.name}" for a in n.names]
            out |= {m for m in names if m in modules}
    return out


def _graph() -> dict[str, set[str]]:
    """module -> modules it imports at module level (its own parent packages left out: Python
    imports them before the module anyway, so such an edge is never a circle of ours)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {d for d in _top_level_imports(p, set(files)) if d != m and not m.startswith(d + ".")}
            for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (as a path) or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_no_import_circle() -> None:
    graph = _graph()
    assert "selfcal_batch.pipeline.steps_finish" not in graph["selfcal_batch.pipeline.steps_prepare"]
    assert "selfcal_batch.pipeline.steps_prepare" not in graph["selfcal_batch.pipeline.steps_finish"]
    assert _cycle(graph) == [], " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_step_modules_do_not_import_each_other_anywhere() -> None:
    """The prepare and finish step modules share helpers through pipeline.step_tools; neither
    imports the other, also not inside a function (the former circle)."""
    for a, b in (("steps_prepare", "steps_finish"), ("steps_finish", "steps_prepare")):
        tree = ast.parse((PKG / "pipeline" / f"{a}.py").read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert f"selfcal_batch.pipeline.{b}" not in mods, (a, b)
