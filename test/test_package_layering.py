"""Import layering of the package, read from its source (ast; imports inside functions count):
core/ is the bottom layer (pure Python that imports no other part of the package and no rclpy);
no module and no subpackage imports itself round a cycle; models/ never imports serving/; and
what a policy process loads never loads training code, checked from the source and, in a
subprocess, by loading every backend."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

PACKAGE = "vla_policy_node"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE
CORE = SOURCE / "core"
CORE_PACKAGE = [PACKAGE, "core"]
UPPER_LAYERS = ("evaluation", "models", "data", "nodes")


def module_of(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p): p for p in sorted(SOURCE.rglob("*.py"))}


def imported_modules(path: Path, package: list[str] = CORE_PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, function bodies included, in line
    order. Relative names resolve against `package`; `from X import a` names X.a where that is a
    module of this package, else X."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:max(0, len(package) - (node.level - 1))] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES]
            out += [(node.lineno, name) for name in submodules]
            if len(submodules) < len(node.names):
                out.append((node.lineno, module))
    return sorted(out)


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
        "probe.py:4 imports vla_policy_node.data.bags", "probe.py:6 imports vla_policy_node.nodes.common",
        "probe.py:7 imports rclpy.node"]


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_upper_layer_and_no_rclpy(path):
    assert layering_violations(path) == []


# ---- the import graph of the whole package ----------------------------------------------------

def resolve(name: str) -> str:
    """The package module an import name loads (the longest known prefix); a third-party import:
    its top-level name."""
    if not name.startswith(PACKAGE + "."):
        return name.split(".")[0]
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def build_imports() -> dict[str, dict[str, str]]:
    """module -> {imported module or third-party top-level name: 'file:line' of the first such import}."""
    graph = {}
    for module, path in MODULES.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        edges = graph[module] = {}
        for line, name in imported_modules(path, package):
            target = resolve(name)
            if target != module:
                edges.setdefault(target, f"{path.relative_to(SOURCE.parent)}:{line}")
    return graph


IMPORTS = build_imports()


def find_cycle(graph: dict[str, set]) -> list[str] | None:
    """One cycle of a directed graph as [a, b, ..., a] (depth first, in name order), or None."""
    state = {}
    for start in sorted(graph):
        if start in state:
            continue
        state[start], path, stack = "open", [start], [iter(sorted(graph[start]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = "done"
                stack.pop()
            elif state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = "open"
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def cycle_report(graph: dict[str, dict[str, str]]) -> str | None:
    """'a -> b (file:line) -> a (file:line)' for one cycle of a graph whose edges carry the import
    that makes them, or None."""
    cycle = find_cycle({node: set(edges) for node, edges in graph.items()})
    if cycle is None:
        return None
    return cycle[0] + "".join(f" -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:]))


def children_graph(package: str) -> dict[str, dict[str, str]]:
    """The imports between the direct children (modules and subpackages) of `package`: a
    subpackage stands for every module inside it; the package's own __init__.py is left out."""
    def child(module: str) -> str | None:
        if not module.startswith(package + "."):
            return None
        return f"{package}.{module[len(package) + 1:].split('.')[0]}"

    graph = {}
    for module, edges in IMPORTS.items():
        a = child(module)
        if a is None:
            continue
        graph.setdefault(a, {})
        for target, where in edges.items():
            b = child(target)
            if b is not None and b != a:
                graph[a].setdefault(b, where)
    return graph


def test_the_cycle_finder_names_a_cycle_and_the_imports_that_close_it():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = {"x": {"y": "x.py:3"}, "y": {"x": "y.py:9", "z": "y.py:2"}, "z": {}}
    assert cycle_report(graph) == "x -> y (x.py:3) -> x (y.py:9)"


def test_no_module_imports_itself_through_others():
    graph = {module: {t: w for t, w in edges.items() if t in MODULES} for module, edges in IMPORTS.items()}
    report = cycle_report(graph)
    assert report is None, f"import cycle between modules: {report}"


def test_no_subpackages_import_each_other():
    packages = sorted({".".join(m.split(".")[:i]) for m in MODULES for i in range(1, len(m.split(".")))})
    cycles = [report for report in map(cycle_report, map(children_graph, packages)) if report]
    assert cycles == [], "import cycles between the parts of a package:\n" + "\n".join(cycles)


def test_models_do_not_import_serving():
    """serving/ builds on models/ (vla-serve serves a backend); what both need lives in models/."""
    bad = [f"{where} imports {target}" for module, edges in IMPORTS.items() if module.startswith(f"{PACKAGE}.models.")
           for target, where in edges.items() if target.startswith(f"{PACKAGE}.serving")]
    assert bad == []


# ---- inference loads no training code ----------------------------------------------------------

TRAINING_THIRD_PARTY = {"accelerate"}


def is_training(module: str) -> bool:
    return (module.rpartition(".")[2].startswith("training_") or module == f"{PACKAGE}.models.components.training"
            or module in TRAINING_THIRD_PARTY)


def is_inference(module: str) -> bool:
    """What a policy process loads: the backends with their configuration, modeling and shared
    components (models/ but for training), the nodes and vla-serve."""
    parts = module.split(".")
    return len(parts) > 1 and parts[1] in ("models", "nodes", "serving") and not is_training(module)


def loads(module: str) -> dict[str, str]:
    """What loading `module` loads first-hand: its imports and every package above it (whose
    __init__.py runs first)."""
    parts = module.split(".")
    parents = {p: "its package's __init__.py runs first" for p in (".".join(parts[:i]) for i in range(1, len(parts)))
               if p in MODULES}
    return {**parents, **IMPORTS.get(module, {})}


def training_chain(start: str) -> list[str] | None:
    """The shortest chain of loads from `start` to a training module, each step with the import
    that makes it; None when there is none."""
    came_from = {start: None}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target, where in sorted(loads(module).items()):
            if target in came_from:
                continue
            came_from[target] = (module, where)
            if is_training(target):
                chain = []
                while came_from[target] is not None:
                    module, where = came_from[target]
                    chain.insert(0, f"{module} -> {target} ({where})")
                    target = module
                return chain
            queue.append(target)
    return None


INFERENCE = sorted(m for m in MODULES if is_inference(m))


@pytest.mark.parametrize("module", INFERENCE, ids=lambda m: m[len(PACKAGE) + 1:])
def test_inference_loads_no_training_code(module):
    chain = training_chain(module)
    assert chain is None, "loads training code:\n" + "\n".join(chain)


LOAD_EVERY_BACKEND = f"""
import json, sys
sys.modules["accelerate"] = None     # absent, as on a machine without it: diffusers and transformers load it
                                     # whenever it is installed, and an import of it by this package fails
from {PACKAGE}.models.registry import BACKENDS, backend_class
for name in BACKENDS:
    backend_class(name)
print(json.dumps({{"accelerate": sys.modules["accelerate"] is not None,
                  "training": sorted(m for m in sys.modules
                              if m.startswith("{PACKAGE}.") and m.rpartition(".")[2].startswith("training"))}}))
"""


def test_loading_every_backend_loads_no_training_module_and_needs_no_accelerate():
    run = subprocess.run([sys.executable, "-c", LOAD_EVERY_BACKEND], cwd=SOURCE.parent, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.splitlines()[-1]) == {"accelerate": False, "training": []}
