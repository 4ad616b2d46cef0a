"""launch/*.launch.py agree with the graph descriptions, setup.py, the parameter and robot files.

`launch` and `launch_ros` are not installed in the pip environment, so the launch files run
against small recording fakes injected into sys.modules (removed again afterwards).
"""

from __future__ import annotations

import ast
import contextlib
import re
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

from vla_policy_node.core.embodiment import load_robot, resolve_robot
from vla_policy_node.graph import PACKAGE, load_graph, params_section_key

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_DIR = ROOT / "launch"
GRAPH_DIR = ROOT / "config" / "graphs"
LAUNCH_FILES = sorted(LAUNCH_DIR.glob("*.launch.py"))
GRAPH_FILES = sorted(GRAPH_DIR.glob("*.yaml"))
FAKE_MODULES = ("launch", "launch.actions", "launch.event_handlers", "launch.events", "launch.substitutions",
                "launch_ros", "launch_ros.actions")


def launch_stem(path: Path) -> str:
    return path.name.removesuffix(".launch.py")


# --------------------------------------------------------------------------------------------
# setup.py, read without running setup()
# --------------------------------------------------------------------------------------------

def setup_console_scripts(setup_py: Path = ROOT / "setup.py") -> tuple[dict, dict]:
    """(NODES, all console scripts) declared in setup.py: name -> 'module:function'."""
    tree = ast.parse(setup_py.read_text())
    nodes = None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "NODES" for t in stmt.targets):
            nodes = ast.literal_eval(stmt.value)
    assert isinstance(nodes, dict) and nodes, "setup.py: NODES dict not found"
    scripts = dict(nodes)
    # Literal "name=module:function" entries (e.g. vla-graph) next to the NODES comprehension.
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = re.fullmatch(r"\s*([\w.\-]+)\s*=\s*([\w.]+:\w+)\s*", node.value)
            if m:
                scripts[m.group(1)] = m.group(2)
    return nodes, scripts


NODES, CONSOLE_SCRIPTS = setup_console_scripts()


def entry_point_problems(executable: str) -> list[str]:
    """The console script is declared, its target function exists, and it is installed in sys.prefix/bin."""
    if executable not in NODES:
        known = ", ".join(sorted(NODES))
        return [f"executable '{executable}': not a node console script in setup.py NODES ({known})"]
    problems = []
    module, func = CONSOLE_SCRIPTS[executable].split(":")
    source = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if not source.is_file():
        problems.append(f"executable '{executable}': entry point module {module} not found at {source}")
    elif not any(isinstance(n, ast.FunctionDef) and n.name == func for n in ast.parse(source.read_text()).body):
        problems.append(f"executable '{executable}': {module} defines no top-level {func}()")
    installed = Path(sys.prefix) / "bin" / executable
    if not installed.is_file():
        problems.append(f"executable '{executable}': not installed at {installed}")
    elif f"from {module} import {func}" not in installed.read_text(errors="replace"):
        problems.append(f"executable '{executable}': {installed} does not run {module}:{func} (stale install?)")
    return problems


# --------------------------------------------------------------------------------------------
# Recording fakes for launch / launch_ros
# --------------------------------------------------------------------------------------------

class LaunchDescription:
    def __init__(self, actions=None):
        self.actions = list(actions or [])


class Node:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class DeclareLaunchArgument:
    def __init__(self, name, **kwargs):
        self.name = name
        self.kwargs = kwargs


class RegisterEventHandler:
    def __init__(self, handler):
        self.handler = handler


class OnProcessExit:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class EmitEvent:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class Shutdown:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class LaunchConfiguration:
    def __init__(self, name, **kwargs):
        self.name = name
        self.kwargs = kwargs


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


@contextlib.contextmanager
def fake_launch_modules():
    """Install the fakes in sys.modules; everything is restored (or removed) on exit."""
    actions = _module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                      RegisterEventHandler=RegisterEventHandler, EmitEvent=EmitEvent)
    event_handlers = _module("launch.event_handlers", OnProcessExit=OnProcessExit)
    events = _module("launch.events", Shutdown=Shutdown)
    substitutions = _module("launch.substitutions", LaunchConfiguration=LaunchConfiguration)
    launch = _module("launch", LaunchDescription=LaunchDescription, actions=actions,
                     event_handlers=event_handlers, events=events, substitutions=substitutions)
    ros_actions = _module("launch_ros.actions", Node=Node)
    launch_ros = _module("launch_ros", actions=ros_actions)
    mods = dict(zip(FAKE_MODULES, (launch, actions, event_handlers, events, substitutions, launch_ros,
                                   ros_actions)))
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in mods.items():
            mp.setitem(sys.modules, name, mod)
        yield mods


@pytest.fixture
def fake_launch():
    with fake_launch_modules() as mods:
        yield mods


def run_launch_file(path: Path):
    """Execute a launch file and return its generate_launch_description() (needs the fakes installed)."""
    namespace = runpy.run_path(str(path), run_name=f"launch_file_{launch_stem(path)}")
    return namespace["generate_launch_description"]()


# --------------------------------------------------------------------------------------------
# The consistency checker: returns a list of problems, empty when consistent
# --------------------------------------------------------------------------------------------

def param_file_problems(path: str, node_name: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        return [f"node '{node_name}': parameter file {p} does not exist"]
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        return [f"node '{node_name}': parameter file {p} is not valid YAML: {exc}"]
    section = params_section_key(node_name)
    if not isinstance(data, dict) or list(data) != [section]:
        keys = list(data) if isinstance(data, dict) else type(data).__name__
        return [f"node '{node_name}': parameter file {p} top-level keys {keys}, expected ['{section}']"]
    body = data[section]
    if not isinstance(body, dict) or not isinstance(body.get("ros__parameters"), dict):
        return [f"node '{node_name}': parameter file {p} has no '{node_name}.ros__parameters' mapping"]
    return []


def robot_argument_problems(declared: list, graph) -> list[str]:
    robot_args = [d for d in declared if d.name == "robot"]
    if len(robot_args) != 1:
        return [f"expected one DeclareLaunchArgument 'robot', found {len(robot_args)}"]
    default = robot_args[0].kwargs.get("default_value")
    if not isinstance(default, str) or not default:
        return [f"launch argument 'robot': default_value {default!r} is not a robot name"]
    problems = []
    if default != graph.robot:
        problems.append(f"launch argument 'robot': default {default!r} differs from the graph's robot "
                        f"{graph.robot!r}")
    robot_file = resolve_robot(default)
    if not robot_file.is_file():
        return problems + [f"launch argument 'robot': robot file {robot_file} does not exist"]
    try:
        robot = load_robot(default)
    except Exception as exc:  # noqa: BLE001 - any load failure is a finding
        return problems + [f"launch argument 'robot': {robot_file} does not load: {exc}"]
    if robot.name != default:
        problems.append(f"launch argument 'robot': {robot_file} is named {robot.name!r}")
    return problems


def node_problems(node: Node, spec) -> list[str]:
    kw = node.kwargs
    name, exe = kw.get("name"), kw.get("executable")
    problems = []
    if kw.get("package") != PACKAGE:
        problems.append(f"node '{name}': package {kw.get('package')!r}, expected {PACKAGE!r}")
    problems += entry_point_problems(exe)
    params = list(kw.get("parameters") or [])
    files = [p for p in params if isinstance(p, (str, Path))]
    dicts = [p for p in params if isinstance(p, dict)]
    if len(files) + len(dicts) != len(params):
        problems.append(f"node '{name}': parameters entries must be file paths or dicts: {params!r}")
    for f in files:
        problems += param_file_problems(str(f), name)
    if len(dicts) != 1:
        problems.append(f"node '{name}': expected one parameter dict (robot, use_sim_time), found {len(dicts)}")
    else:
        overrides = dicts[0]
        if params[-1] is not overrides:
            problems.append(f"node '{name}': the parameter dict must come after the files so it overrides them")
        robot = overrides.get("robot")
        if not (isinstance(robot, LaunchConfiguration) and robot.name == "robot"):
            problems.append(f"node '{name}': parameter 'robot' is {robot!r}, not LaunchConfiguration('robot')")
        if not isinstance(overrides.get("use_sim_time"), bool):
            problems.append(f"node '{name}': parameter 'use_sim_time' missing or not a bool")
        elif spec is not None and overrides["use_sim_time"] != spec.use_sim_time:
            problems.append(f"node '{name}': use_sim_time={overrides['use_sim_time']}, graph says "
                            f"{spec.use_sim_time}")
        if spec is not None:
            for key, value in spec.parameters.items():
                given = overrides.get(key)
                if isinstance(given, LaunchConfiguration) and given.name == key:
                    continue       # a launch argument (backend, checkpoint, device) defaulting to it: checked below
                if key != "robot" and given != value:
                    problems.append(f"node '{name}': parameter {key}={overrides.get(key)!r}, graph sets {value!r}")
    if spec is not None and (kw.get("respawn", False), kw.get("respawn_delay")) != \
            (spec.respawn, spec.respawn_delay_s):
        problems.append(f"node '{name}': respawn={kw.get('respawn')} delay {kw.get('respawn_delay')}, graph says "
                        f"{spec.respawn} delay {spec.respawn_delay_s}")
    if spec is not None and [str(f) for f in files] != [str(f) for f in spec.parameter_files]:
        problems.append(f"node '{name}': parameter files {[str(f) for f in files]} differ from the graph's "
                        f"{[str(f) for f in spec.parameter_files]}")
    return problems


def handler_problems(nodes: list, handlers: list, graph) -> list[str]:
    problems = []
    by_name = {n.kwargs.get("name"): n for n in nodes}
    ending = {s.name for s in graph.nodes if s.exit_ends_graph}

    def shuts_down(handler) -> bool:
        on_exit = handler.kwargs.get("on_exit") or []
        on_exit = on_exit if isinstance(on_exit, (list, tuple)) else [on_exit]
        return any(isinstance(a, EmitEvent) and isinstance(a.kwargs.get("event"), Shutdown) for a in on_exit)

    exit_handlers = [h.handler for h in handlers if isinstance(h.handler, OnProcessExit)]
    for h in handlers:
        if not isinstance(h.handler, OnProcessExit):
            problems.append(f"unexpected event handler {type(h.handler).__name__}")
    for name in sorted(ending):
        node = by_name.get(name)
        if not any(h.kwargs.get("target_action") is node and shuts_down(h) for h in exit_handlers):
            problems.append(f"node '{name}' has exit_ends_graph but no OnProcessExit handler emitting Shutdown")
    for h in exit_handlers:
        target = h.kwargs.get("target_action")
        target_name = target.kwargs.get("name") if isinstance(target, Node) else None
        if target_name not in ending:
            problems.append(f"OnProcessExit handler on '{target_name}', which does not end the graph")
    return problems


def description_problems(ld, graph) -> list[str]:
    if not isinstance(ld, LaunchDescription):
        return [f"generate_launch_description() returned {type(ld).__name__}, not a LaunchDescription"]
    declared = [a for a in ld.actions if isinstance(a, DeclareLaunchArgument)]
    nodes = [a for a in ld.actions if isinstance(a, Node)]
    handlers = [a for a in ld.actions if isinstance(a, RegisterEventHandler)]
    problems = [f"unexpected launch action {type(a).__name__}" for a in ld.actions
                if not isinstance(a, (DeclareLaunchArgument, Node, RegisterEventHandler))]
    problems += robot_argument_problems(declared, graph)
    specs = {s.name: s for s in graph.nodes}
    for node in nodes:
        problems += node_problems(node, specs.get(node.kwargs.get("name")))
    launched = sorted((n.kwargs.get("name"), n.kwargs.get("executable")) for n in nodes)
    wanted = sorted((s.name, s.executable) for s in graph.nodes)
    if launched != wanted:
        problems.append(f"launched nodes {launched} differ from graph '{graph.name}' nodes {wanted}")
    problems += handler_problems(nodes, handlers, graph)
    return problems


def check_launch_file(launch_file: Path, graph_name: str) -> list[str]:
    """All consistency problems of one launch file against the graph description it should start."""
    try:
        graph = load_graph(graph_name)
    except Exception as exc:  # noqa: BLE001
        return [f"graph {graph_name}: {exc}"]
    with fake_launch_modules():
        try:
            ld = run_launch_file(launch_file)
        except Exception as exc:  # noqa: BLE001
            return [f"{launch_file}: generate_launch_description() failed: {exc!r}"]
    return description_problems(ld, graph)


# --------------------------------------------------------------------------------------------
# The project's launch files
# --------------------------------------------------------------------------------------------

def test_there_are_launch_files_and_graphs():
    assert LAUNCH_FILES and GRAPH_FILES


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=launch_stem)
def test_launch_file_consistent(launch_file):
    assert check_launch_file(launch_file, launch_stem(launch_file)) == []


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=launch_stem)
def test_launch_description_details(fake_launch, launch_file):
    """Explicit checks of what the checker verifies, on the real recorded description."""
    graph = load_graph(launch_stem(launch_file))
    assert graph.name == launch_stem(launch_file)
    ld = run_launch_file(launch_file)
    assert isinstance(ld, LaunchDescription)
    nodes = [a for a in ld.actions if isinstance(a, Node)]
    assert [(n.kwargs["name"], n.kwargs["executable"]) for n in nodes] == \
        [(s.name, s.executable) for s in graph.nodes]
    declared = {a.name: a for a in ld.actions if isinstance(a, DeclareLaunchArgument)}
    robot_arg = declared["robot"]
    assert robot_arg.kwargs["default_value"] == graph.robot
    assert declared["namespace"].kwargs["default_value"] == ""
    assert all(n.kwargs["namespace"].name == "namespace" and ("/clock", "clock") in n.kwargs["remappings"]
               for n in [a for a in ld.actions if isinstance(a, Node)])
    policy = next((s for s in graph.nodes if s.executable == "vla_policy"), None)
    if policy is not None:        # model arguments default to what the graph sets: unset, they change nothing
        from vla_policy_node.graph import node_parameter
        for key in ("backend", "checkpoint"):
            assert declared[key].kwargs["default_value"] == str(node_parameter(policy, key, "") or "")
    assert load_robot(robot_arg.kwargs["default_value"]).name == graph.robot
    for node, spec in zip(nodes, graph.nodes):
        exe = node.kwargs["executable"]
        assert exe in NODES
        assert (Path(sys.prefix) / "bin" / exe).is_file()
        *files, overrides = node.kwargs["parameters"]
        assert files and all(isinstance(f, str) for f in files)
        for f in files:
            data = yaml.safe_load(Path(f).read_text())
            assert list(data) == [params_section_key(spec.name)]
            assert isinstance(data[params_section_key(spec.name)]["ros__parameters"], dict)
        assert isinstance(overrides["robot"], LaunchConfiguration)
        assert overrides["robot"].name == "robot"
        assert overrides["use_sim_time"] is spec.use_sim_time
        assert node.kwargs["additional_env"] == spec.env          # the process environment the graph sets
    ending = [s.name for s in graph.nodes if s.exit_ends_graph]
    handlers = [a.handler for a in ld.actions if isinstance(a, RegisterEventHandler)]
    assert sorted(h.kwargs["target_action"].kwargs["name"] for h in handlers) == sorted(ending)
    for h in handlers:
        assert isinstance(h, OnProcessExit)
        (emit,) = h.kwargs["on_exit"]
        assert isinstance(emit, EmitEvent) and isinstance(emit.kwargs["event"], Shutdown)


def test_sim_demo_specifics(fake_launch):
    """Known facts of sim_demo: the evaluator ends the graph, the sim bridge is the clock."""
    ld = run_launch_file(LAUNCH_DIR / "sim_demo.launch.py")
    nodes = {a.kwargs["name"]: a for a in ld.actions if isinstance(a, Node)}
    assert set(nodes) == {"sim_bridge", "perception", "policy", "executor", "imagination_monitor", "evaluator"}
    assert nodes["sim_bridge"].kwargs["parameters"][-1]["use_sim_time"] is False
    assert nodes["evaluator"].kwargs["parameters"][-1]["use_sim_time"] is True
    (handler,) = [a.handler for a in ld.actions if isinstance(a, RegisterEventHandler)]
    assert handler.kwargs["target_action"] is nodes["evaluator"]


def test_every_graph_has_a_launch_file():
    launch_stems = {launch_stem(p) for p in LAUNCH_FILES}
    graph_stems = {p.stem for p in GRAPH_FILES}
    assert graph_stems - launch_stems == set(), "graphs without a launch file"
    assert launch_stems - graph_stems == set(), "launch files without a graph"
    for path in GRAPH_FILES:
        assert yaml.safe_load(path.read_text())["name"] == path.stem


def test_fake_modules_are_removed_afterwards():
    before = {name: sys.modules.get(name) for name in FAKE_MODULES}
    with fake_launch_modules() as mods:
        assert all(sys.modules[name] is mods[name] for name in FAKE_MODULES)
    assert {name: sys.modules.get(name) for name in FAKE_MODULES} == before
    assert all(sys.modules.get(name) is not mods[name] for name in FAKE_MODULES)


def test_setup_py_parsing():
    assert set(NODES) <= set(CONSOLE_SCRIPTS)
    assert "vla-graph" in CONSOLE_SCRIPTS and "vla-graph" not in NODES
    assert all(re.fullmatch(r"[\w.]+:\w+", target) for target in CONSOLE_SCRIPTS.values())


# --------------------------------------------------------------------------------------------
# The checker fails on bad input
# --------------------------------------------------------------------------------------------

SIM_DEMO_TEXT = (GRAPH_DIR / "sim_demo.yaml").read_text()


def _write_graph(tmp_path: Path, text: str) -> tuple[Path, Path]:
    graph = tmp_path / "tmp_graph.yaml"
    graph.write_text(text)
    launch_file = tmp_path / "tmp_graph.launch.py"
    launch_file.write_text("from vla_policy_node.graph import launch_description\n\n\n"
                           "def generate_launch_description():\n"
                           f"    return launch_description({str(graph)!r})\n")
    return graph, launch_file


def test_checker_accepts_a_copy_of_a_good_graph(tmp_path):
    graph, launch_file = _write_graph(tmp_path, SIM_DEMO_TEXT)
    assert check_launch_file(launch_file, str(graph)) == []


def _params(tmp_path: Path, text: str) -> str:
    p = tmp_path / "params_under_test.yaml"
    p.write_text(text)
    return str(p)


BROKEN_GRAPHS = {
    "missing_param_file": (lambda tmp: SIM_DEMO_TEXT.replace("params/policy.yaml", "params/no_such_policy.yaml"),
                           "nodes[2].parameters[0]: parameter file {root}/params/no_such_policy.yaml not found"),
    "missing_executable": (lambda tmp: SIM_DEMO_TEXT.replace("executable: vla_executor", "executable: vla_ghost"),
                           "executable 'vla_ghost': not a node console script in setup.py NODES"),
    "wrong_top_level_key": (lambda tmp: SIM_DEMO_TEXT.replace(
        "params/policy.yaml", _params(tmp, "planner:\n  ros__parameters: {backend: oracle}\n")),
        "top-level keys ['planner'], expected ['/**/policy']"),
    "no_ros_parameters": (lambda tmp: SIM_DEMO_TEXT.replace(
        "params/policy.yaml", _params(tmp, "/**/policy:\n  backend: oracle\n")),
        "has no 'policy.ros__parameters' mapping"),
    "invalid_yaml": (lambda tmp: SIM_DEMO_TEXT.replace(
        "params/policy.yaml", _params(tmp, "policy: [unclosed\n")), "is not valid YAML"),
    "missing_robot": (lambda tmp: SIM_DEMO_TEXT.replace("robot: metaworld_sawyer", "robot: no_such_robot"),
                      "robot: no robot file {root}/robots/no_such_robot.yaml"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_GRAPHS))
def test_checker_reports_broken_graph(tmp_path, case):
    make_text, expected = BROKEN_GRAPHS[case]
    text = make_text(tmp_path)
    assert text != SIM_DEMO_TEXT
    graph, launch_file = _write_graph(tmp_path, text)
    problems = check_launch_file(launch_file, str(graph))
    expected = expected.format(root=GRAPH_DIR.parent)
    assert any(expected in p for p in problems), problems


def test_checker_reports_launch_file_for_another_graph(tmp_path):
    launch_file = tmp_path / "sim_demo.launch.py"
    launch_file.write_text((LAUNCH_DIR / "robot_bringup.launch.py").read_text())
    problems = check_launch_file(launch_file, "sim_demo")
    assert any("differ from graph 'sim_demo' nodes" in p for p in problems), problems
    assert any("default 'panda_ros2_control' differs" in p for p in problems), problems


def test_checker_reports_missing_graph(tmp_path):
    problems = check_launch_file(LAUNCH_DIR / "sim_demo.launch.py", str(tmp_path / "absent.yaml"))
    assert problems and "graph description not found" in problems[0]


def _sim_demo_description():
    with fake_launch_modules():
        return run_launch_file(LAUNCH_DIR / "sim_demo.launch.py"), load_graph("sim_demo")


def _nodes(ld):
    return {a.kwargs["name"]: a for a in ld.actions if isinstance(a, Node)}


def _drop_handlers(ld):
    ld.actions = [a for a in ld.actions if not isinstance(a, RegisterEventHandler)]


def _drop_node(ld):
    ld.actions = [a for a in ld.actions if not (isinstance(a, Node) and a.kwargs["name"] == "perception")]


def _robot_as_string(ld):
    _nodes(ld)["policy"].kwargs["parameters"][-1]["robot"] = "metaworld_sawyer"


def _no_sim_time(ld):
    del _nodes(ld)["executor"].kwargs["parameters"][-1]["use_sim_time"]


def _dict_first(ld):
    params = _nodes(ld)["executor"].kwargs["parameters"]
    params.insert(0, params.pop())


def _handler_on_wrong_node(ld):
    for a in ld.actions:
        if isinstance(a, RegisterEventHandler):
            a.handler.kwargs["target_action"] = _nodes(ld)["policy"]


def _handler_without_shutdown(ld):
    for a in ld.actions:
        if isinstance(a, RegisterEventHandler):
            a.handler.kwargs["on_exit"] = []


def _wrong_package(ld):
    _nodes(ld)["policy"].kwargs["package"] = "other_pkg"


def _sim_time_flipped(ld):
    _nodes(ld)["sim_bridge"].kwargs["parameters"][-1]["use_sim_time"] = True


BROKEN_DESCRIPTIONS = {
    "no_exit_handler": (_drop_handlers, "node 'evaluator' has exit_ends_graph but no OnProcessExit"),
    "missing_node": (_drop_node, "launched nodes"),
    "robot_not_launch_configuration": (_robot_as_string, "node 'policy': parameter 'robot' is"),
    "no_use_sim_time": (_no_sim_time, "node 'executor': parameter 'use_sim_time' missing"),
    "overrides_before_files": (_dict_first, "node 'executor': the parameter dict must come after the files"),
    "handler_on_wrong_node": (_handler_on_wrong_node, "OnProcessExit handler on 'policy'"),
    "handler_without_shutdown": (_handler_without_shutdown, "no OnProcessExit handler emitting Shutdown"),
    "wrong_package": (_wrong_package, "node 'policy': package 'other_pkg'"),
    "use_sim_time_differs": (_sim_time_flipped, "node 'sim_bridge': use_sim_time=True, graph says False"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_DESCRIPTIONS))
def test_checker_reports_broken_description(case):
    ld, graph = _sim_demo_description()
    assert description_problems(ld, graph) == []
    mutate, expected = BROKEN_DESCRIPTIONS[case]
    mutate(ld)
    problems = description_problems(ld, graph)
    assert any(expected in p for p in problems), problems


def test_entry_point_check_reports_uninstalled_script(monkeypatch, tmp_path):
    assert entry_point_problems("vla_policy") == []
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert any("not installed at" in p for p in entry_point_problems("vla_policy"))


@pytest.mark.parametrize("edit, message", [
    ({"respawn": True, "exit_ends_graph": True}, "nodes[0].respawn: a node that ends the graph cannot be respawned"),
    ({"respawn": True, "respawn_delay_s": -1}, "nodes[0].respawn_delay_s: must be >= 0"),
])
def test_respawn_keys_fail_with_file_and_key(tmp_path, edit, message):
    from vla_policy_node.graph import GraphConfigError

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "robot": "metaworld_sawyer",
                                    "nodes": [{"name": "policy", "executable": "vla_policy", **edit}]}))
    with pytest.raises(GraphConfigError, match=re.escape(f"{path}: {message}")):
        load_graph(str(path))


def test_processes_that_rejoin_episodes_are_respawned():
    """Every graph respawns perception and policy (they rejoin the episode on /vla/episode);
    the robot-side and ending nodes are never restarted behind the operator's back."""
    for graph_file in GRAPH_FILES:
        for spec in load_graph(str(graph_file)).nodes:
            assert spec.respawn == (spec.name in {"perception", "policy", "imagination_monitor"}), \
                f"{graph_file.name}: {spec.name}"


def test_remap_reaches_the_command_line_and_bad_entries_are_named(tmp_path):
    from vla_policy_node.graph import GraphConfigError
    from vla_policy_node.graph_runner import node_command

    path = tmp_path / "g.yaml"
    node = {"name": "perception", "executable": "vla_perception", "remap": {"/vla/observation": "/relay/in"}}
    path.write_text(yaml.safe_dump({"name": "g", "robot": "metaworld_sawyer", "nodes": [node]}))
    (spec,) = load_graph(str(path)).nodes
    cmd = node_command(spec, {}, {"/joint_states": "/robot/joint_states"})
    assert ["-r", "/vla/observation:=/relay/in"] == cmd[cmd.index("/vla/observation:=/relay/in") - 1:][:2]
    assert "/joint_states:=/robot/joint_states" in cmd
    node["remap"] = {"/vla/observation": 3}
    path.write_text(yaml.safe_dump({"name": "g", "robot": "metaworld_sawyer", "nodes": [node]}))
    with pytest.raises(GraphConfigError, match=re.escape(f"{path}: nodes[0].remap./vla/observation")):
        load_graph(str(path))
