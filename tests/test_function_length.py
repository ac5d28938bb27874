"""No function over 60 lines in pipeline/ and selfcal/ (house rule; pure, AST only)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "selfcal_batch"
LIMIT = 60


def long_functions(folder: Path, limit: int = LIMIT) -> list[str]:
    """``path:line name (n lines)`` of every function (also nested or a method) over ``limit`` lines."""
    out = []
    for f in sorted(folder.rglob("*.py")):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = n.end_lineno - n.lineno + 1
                if lines > limit:
                    out.append(f"{f}:{n.lineno} {n.name} ({lines} lines)")
    return out


def test_no_long_functions_in_pipeline_and_selfcal() -> None:
    assert long_functions(PKG / "pipeline") + long_functions(PKG / "selfcal") == []


def test_the_check_sees_long_functions(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * 61)
    assert long_functions(tmp_path) and not long_functions(tmp_path, limit=62)
