"""Shape rules of the code that no linter checks by itself."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parents[1] / "agent"
MAX_FUNCTION_LINES = 60


def _modules(under: Path) -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(under.rglob("*.py"))]


def test_every_function_fits_on_a_screen() -> None:
    too_long = [
        f"{path.relative_to(AGENT.parent)}:{node.lineno} {node.name} "
        f"({(node.end_lineno or node.lineno) - node.lineno + 1} lines)"
        for path, module in _modules(AGENT)
        for node in ast.walk(module)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not too_long


def test_the_cast_layer_reports_and_never_drives_the_supervisor() -> None:
    upward = [
        f"{path.relative_to(AGENT.parent)}:{node.lineno}"
        for path, module in _modules(AGENT / "cast")
        for node in ast.walk(module)
        if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agent.supervisor"))
        or (
            isinstance(node, ast.Import)
            and any(alias.name.startswith("agent.supervisor") for alias in node.names)
        )
    ]
    assert not upward
