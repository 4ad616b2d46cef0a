"""Graph descriptions (config/graphs/<name>.yaml): which nodes run, with which parameters.

One description feeds both ways to run: `ros2 launch` (launch/*.launch.py call
`launch_description`) and the pip-environment runner (`vla-graph`), so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .core.embodiment import config_root, resolve_robot

PACKAGE = "vla_policy_node"


class GraphConfigError(ValueError):
    """A graph description that cannot be run; the message names file, key and reason."""


@dataclass
class NodeSpec:
    name: str
    executable: str                   # console entry point (pip) = ROS executable (ros2 run)
    parameter_files: list[Path]
    parameters: dict = field(default_factory=dict)
    use_sim_time: bool = True
    exit_ends_graph: bool = False     # the graph stops when this node exits (e.g. the evaluator)
    respawn: bool = False             # restarted when it exits (it rejoins the running episode)
    respawn_delay_s: float = 1.0
    remap: dict = field(default_factory=dict)   # topic or service name -> name it takes in this graph
    env: dict = field(default_factory=dict)     # environment variables of the node's process (e.g. math
    #                                             library threads: the policy's MKL_NUM_THREADS)


@dataclass
class GraphSpec:
    name: str
    robot: str                        # robot file name in config/robots/ (or a path to one)
    nodes: list[NodeSpec]


_NODE_KEYS = {"name", "executable", "parameters", "use_sim_time", "exit_ends_graph", "set", "respawn",
              "respawn_delay_s", "remap", "env"}
_GRAPH_KEYS = {"name", "description", "robot", "use_sim_time", "nodes"}


def graph_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    return p if p.suffix in (".yaml", ".yml") else config_root() / "graphs" / f"{name_or_path}.yaml"


def load_graph(name_or_path: str, robot: str | None = None) -> GraphSpec:
    path = graph_path(name_or_path)
    if not path.is_file():
        raise GraphConfigError(f"{path}: graph description not found")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - _GRAPH_KEYS
    if unknown:
        raise GraphConfigError(f"{path}: {sorted(unknown)[0]}: unknown key")
    for key in ("name", "robot", "nodes"):
        if key not in raw:
            raise GraphConfigError(f"{path}: {key}: missing")
    robot = robot or raw["robot"]
    root = config_root()
    sim_time = bool(raw.get("use_sim_time", True))
    nodes = []
    for i, entry in enumerate(raw["nodes"]):
        where = f"{path}: nodes[{i}]"
        unknown = set(entry) - _NODE_KEYS
        if unknown:
            raise GraphConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
        if "name" not in entry or "executable" not in entry:
            raise GraphConfigError(f"{where}: needs 'name' and 'executable'")
        files = [root / f for f in entry.get("parameters", [])]
        for k, f in enumerate(files):
            if not f.is_file():
                raise GraphConfigError(f"{where}.parameters[{k}]: parameter file {f} not found")
        params = {"robot": robot, **entry.get("set", {})}
        spec = NodeSpec(entry["name"], entry["executable"], files, params, bool(entry.get("use_sim_time", sim_time)),
                        bool(entry.get("exit_ends_graph", False)), bool(entry.get("respawn", False)),
                        float(entry.get("respawn_delay_s", 1.0)), dict(entry.get("remap") or {}),
                        dict(entry.get("env") or {}))
        bad = [k for k, v in spec.remap.items() if not (isinstance(k, str) and isinstance(v, str) and k and v)]
        if bad:
            raise GraphConfigError(f"{where}.remap.{bad[0]}: expected 'from: to' topic names")
        bad = [k for k, v in spec.env.items() if not (isinstance(k, str) and k and isinstance(v, (str, int, float)))]
        if bad:
            raise GraphConfigError(f"{where}.env.{bad[0]}: expected 'NAME: value' (a string or number)")
        spec.env = {k: str(v) for k, v in spec.env.items()}
        if spec.respawn and spec.exit_ends_graph:
            raise GraphConfigError(f"{where}.respawn: a node that ends the graph cannot be respawned")
        if spec.respawn_delay_s < 0:
            raise GraphConfigError(f"{where}.respawn_delay_s: must be >= 0, got {spec.respawn_delay_s}")
        nodes.append(spec)
    robot_file = resolve_robot(robot)
    if not robot_file.is_file():
        raise GraphConfigError(f"{path}: robot: no robot file {robot_file}")
    return GraphSpec(raw["name"], robot, nodes)


def params_section_key(node_name: str) -> str:
    """The top-level key of a node's section in a parameter file: '/**/<node>', the node in any
    namespace (a plain '<node>' key would match only the node at the root)."""
    return f"/**/{node_name}"


def node_parameter(spec: NodeSpec, key: str, default=None):
    """A node's parameter as the graph sets it: `set` entries win over its parameter files."""
    if key in spec.parameters:
        return spec.parameters[key]
    value = default
    for f in spec.parameter_files:
        params = (yaml.safe_load(f.read_text()) or {}).get(params_section_key(spec.name), {}).get("ros__parameters", {})
        value = params.get(key, value)
    return value


def launch_description(name: str):
    """A launch.LaunchDescription for `ros2 launch` (needs the launch and launch_ros packages)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    graph = load_graph(name)
    robot = LaunchConfiguration("robot")
    actions = [DeclareLaunchArgument("robot", default_value=graph.robot,
                                     description="embodiment name in config/robots/"),
               DeclareLaunchArgument("namespace", default_value="",
                                     description="every node, topic, service and /clock under this namespace")]
    # the policy's model: defaults are the graph's own values, so an unset argument changes nothing
    policy = next((s for s in graph.nodes if s.executable == "vla_policy"), None)
    model_args = {}
    if policy is not None:
        for key, help_text in (("backend", "policy backend (registry name, auto, remote)"),
                               ("checkpoint", "checkpoint directory"), ("device", "torch device: cpu, cuda, mps")):
            try:
                default = str(node_parameter(policy, key, "") or {"device": "cpu"}.get(key, ""))
            except (yaml.YAMLError, OSError, AttributeError):   # a broken parameter file fails at launch, named
                default = ""
            actions.append(DeclareLaunchArgument(key, default_value=default, description=help_text))
            model_args[key] = LaunchConfiguration(key)
    for spec in graph.nodes:
        params = [str(f) for f in spec.parameter_files]
        params.append({**spec.parameters, "robot": robot, "use_sim_time": spec.use_sim_time,
                       **(model_args if spec is policy else {})})
        node = Node(package=PACKAGE, executable=spec.executable, name=spec.name, namespace=LaunchConfiguration("namespace"),
                    parameters=params, output="screen", respawn=spec.respawn, respawn_delay=spec.respawn_delay_s,
                    remappings=[("/clock", "clock"), *spec.remap.items()], additional_env=spec.env)
        actions.append(node)
        if spec.exit_ends_graph:
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=[EmitEvent(event=Shutdown(reason=f"{spec.name} finished"))])))
    return LaunchDescription(actions)
