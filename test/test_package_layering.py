"""core/ is the bottom layer: pure Python that imports no other part of the package and no rclpy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "vla_policy_node"
CORE = Path(__file__).resolve().parents[1] / PACKAGE / "core"
CORE_PACKAGE = [PACKAGE, "core"]
UPPER_LAYERS = ("evaluation", "models", "data", "nodes")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a core module, function bodies included;
    `from . import x` names x. Relative names resolve against vla_policy_node.core."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.lineno, node.module))
                continue
            base = CORE_PACKAGE[:max(0, len(CORE_PACKAGE) - (node.level - 1))]
            if node.module:
                out.append((node.lineno, ".".join([*base, node.module])))
            else:
                out += [(node.lineno, ".".join([*base, alias.name])) for alias in node.names]
    return out


def layering_violations(path: Path) -> list[str]:
    bad = []
    for line, name in imported_modules(path):
        parts = name.split(".")
        if parts[0] == "rclpy" or (parts[0] == PACKAGE and len(parts) > 1 and parts[1] in UPPER_LAYERS):
            bad.append(f"{path.name}:{line} imports {name}")
    return bad


def test_the_check_sees_relative_absolute_and_function_level_imports(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("from .metrics import psnr\n"
                      "from ..evaluation.reports import write_run_report\n"
                      "from .. import models\n"
                      "import vla_policy_node.data.bags\n"
                      "def f():\n"
                      "    from vla_policy_node.nodes import common\n"
                      "    import rclpy.node\n")
    assert layering_violations(module) == [
        "probe.py:2 imports vla_policy_node.evaluation.reports", "probe.py:3 imports vla_policy_node.models",
        "probe.py:4 imports vla_policy_node.data.bags", "probe.py:6 imports vla_policy_node.nodes",
        "probe.py:7 imports rclpy.node"]


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_upper_layer_and_no_rclpy(path):
    assert layering_violations(path) == []
