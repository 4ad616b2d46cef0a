"""SROS2 access control for a graph: which process may publish, subscribe, serve and call what.

    vla-sros2-policy robot_bringup [--namespace NS] [--robot NAME] -o config/security/robot_bringup.xml

writes an SROS2 policy (format 0.2.0, `ros2 security generate_artifacts -p FILE`) with one enclave
per node of the graph description, /<graph>[/<namespace>]/<node>, each holding one profile that
grants exactly the topics, services and actions the node's code uses: names from nodes/common.py
(TOPICS, SERVICES), the robot file, the graph's parameters and ROS's own per-node entities
(logging, parameters, lifecycle), resolved in the graph's namespace and remappings to fully
qualified names; no wildcards. Arming, the e-stop and the executor's parameter changes (dry_run)
are privileged: only the task runner (it arms) and the lifecycle manager (an operator's
terminal runs in its enclave) may request them; on evaluation graphs, which have neither, the
evaluator (it runs the task runner's code). Every other profile lists them as DENY. Graphs with a
task runner also get an enclave for `vla-task` (node vla_task), the operator's task command.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .core.embodiment import EmbodimentConfig, load_robot
from .graph import GraphConfigError, GraphSpec, NodeSpec, load_graph, node_parameter
from .graph_runner import CLOCK_REMAP
from .nodes.common import SERVICES, TOPICS
from .nodes.diagnostics import TOPIC as DIAGNOSTICS_TOPIC
from .nodes.task_runner import ACTION_NAME as RUN_TASK_ACTION

POLICY_VERSION = "0.2.0"
KINDS = ("publish", "subscribe", "reply", "request", "execute", "call")   # grant kinds, in file order
ELEMENTS = {"publish": ("topics", "topic"), "subscribe": ("topics", "topic"), "reply": ("services", "service"),
            "request": ("services", "service"), "execute": ("actions", "action"), "call": ("actions", "action")}
# What ROS itself gives every node (rclpy): its log, parameter events and parameter services
# (reply), and, for lifecycle nodes (rclpy.lifecycle), the lifecycle services and transition events.
PARAMETER_SERVICES = ("describe_parameters", "get_parameter_types", "get_parameters", "list_parameters",
                      "set_parameters", "set_parameters_atomically")
NODE_SERVICES = (*PARAMETER_SERVICES, "get_type_description")
LIFECYCLE_SERVICES = ("change_state", "get_available_states", "get_available_transitions", "get_state",
                      "get_transition_graph")
MANAGED_EXECUTABLES = {"vla_perception", "vla_policy", "vla_executor", "vla_task_runner"}   # nodes/managed.py
DIAGNOSED_EXECUTABLES = {"vla_perception", "vla_policy", "vla_executor", "vla_task_runner", "vla_lifecycle_manager",
                         "vla_sim_bridge", "vla_imagination_monitor", "vla_evaluator"}     # nodes/diagnostics.py
# Who may arm, clear an e-stop or change the executor's parameters (dry_run): the nodes that drive
# the robot. The lifecycle manager's enclave is the operator's handle for these calls.
PRIVILEGED_EXECUTABLES = ("vla_task_runner", "vla_lifecycle_manager", "vla_evaluator")
OPERATOR_EXECUTABLE = "vla_lifecycle_manager"
TASK_COMMAND = "vla_task"      # the node `vla-task` creates (task_cli.py)


@dataclass
class Profile:
    """One node's grants: kind (KINDS) -> fully qualified names; `deny` lists request DENY services."""
    ns: str
    node: str
    allow: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    deny: set[str] = field(default_factory=set)


@dataclass
class NodeContext:
    """What decides a node's names: its spec in the graph, the graph's other nodes, the robot file."""
    spec: NodeSpec
    graph: GraphSpec
    robot: EmbodimentConfig

    def param(self, key: str, default=None):
        return node_parameter(self.spec, key, default)


def namespace_prefix(namespace: str) -> str:
    """'' or '/a/b' (no trailing slash) for a namespace given as 'a/b', '/a/b/' or ''."""
    parts = [p for p in namespace.split("/") if p]
    return "".join(f"/{p}" for p in parts)


def expand(name: str, ns: str, node: str) -> str:
    """A ROS name expanded as rcl does: absolute kept, private (~) under the node, relative under ns."""
    if name.startswith("~"):
        return f"{ns}/{node}{name[1:]}"
    return name if name.startswith("/") else f"{ns}/{name}"


def resolve(name: str, ns: str, node: str, remaps: dict[str, str]) -> str:
    """The fully qualified name after expansion and the node's remapping rules."""
    fq = expand(name, ns, node)
    for source, target in remaps.items():
        if expand(source, ns, node) == fq:
            return expand(target, ns, node)
    return fq


# ---- what each executable uses (names as its code passes them) ---------------------------------
def _cameras(robot: EmbodimentConfig, names=None) -> list[str]:
    return [c.topic for c in robot.cameras if names is None or c.name in names]


def _task_runner_part(env_state_topic: str | None) -> dict[str, list[str]]:
    """nodes/task_runner.py TaskRunner: resets, arming and episode tracking (task runner, evaluator)."""
    return {"request": [SERVICES[k] for k in ("sim_reset", "policy_reset", "executor_reset", "set_instruction",
                                              "set_armed")],
            "subscribe": [env_state_topic or TOPICS["env_state"], TOPICS["success"], TOPICS["action_chunk"],
                          TOPICS["feedback"], TOPICS["executor_status"]],
            "publish": [TOPICS["episode"]]}


def _recorded(ctx: NodeContext) -> list[str]:
    """nodes/episode_recorder.py: the topics of `record_topics` (plus /clock, which it follows)."""
    return [t for t in ctx.param("record_topics", [""]) if t]


def _perception(ctx: NodeContext) -> dict[str, list[str]]:
    r = ctx.robot
    sub = [*_cameras(r), r.state.joint_states_topic, TOPICS["episode"]]
    if any(s.startswith("ee.") for s in r.state.sources):
        sub.append(r.state.ee_pose_topic)
    if bool(ctx.param("include_env_state", True)) and r.env_state_topic is not None:
        sub.append(r.env_state_topic)
    return {"subscribe": sub, "publish": [TOPICS["observation"]], "reply": [SERVICES["set_instruction"]]}


def _policy(ctx: NodeContext) -> dict[str, list[str]]:
    return {"publish": [TOPICS["action_chunk"], TOPICS["imagined"], TOPICS["policy_status"]],
            "subscribe": [TOPICS["observation"], TOPICS["feedback"], TOPICS["episode"]],
            "reply": [SERVICES["policy_reset"]]}


def _executor(ctx: NodeContext) -> dict[str, list[str]]:
    r, out = ctx.robot, ctx.robot.output
    uses = {"publish": [TOPICS["feedback"], TOPICS["dry_run_command"], TOPICS["executor_status"], out.command_topic],
            "subscribe": [TOPICS["divergence"], TOPICS["action_chunk"], r.state.joint_states_topic],
            "reply": [SERVICES["executor_reset"], SERVICES["set_armed"], SERVICES["estop"]], "call": []}
    if r.state.ee_pose_topic:
        uses["subscribe"].append(r.state.ee_pose_topic)
    if out.contract == "cartesian" and out.ik is not None and out.ik.pose_topic:     # nodes/command_contracts.py
        uses["publish"].append(out.ik.pose_topic)
    if out.trajectory_action is not None:
        uses["call"].append(out.trajectory_action.name)
    return uses


def _task_runner(ctx: NodeContext) -> dict[str, list[str]]:
    uses = _task_runner_part(ctx.param("env_state_topic", "") or None)
    uses["execute"] = [RUN_TASK_ACTION]
    if ctx.param("record_dir", ""):
        uses["subscribe"] += _recorded(ctx)
    return uses


def _lifecycle_manager(ctx: NodeContext) -> dict[str, list[str]]:
    managed = [n for n in ctx.param("node_names", ["perception", "policy", "executor", "task_runner"]) if n]
    return {"request": [f"{n}/{s}" for n in managed for s in ("get_state", "change_state")],
            "reply": [f"~/{s}" for s in ("startup", "resume", "pause", "shutdown")]}


def _sim_bridge(ctx: NodeContext) -> dict[str, list[str]]:
    r, out = ctx.robot, ctx.robot.output
    simulated = [c for c, m in zip(r.cameras, ctx.param("mujoco_cameras", ["corner2"])) if m]
    uses = {"publish": ["/clock", *(c.topic for c in simulated), r.state.joint_states_topic,
                        r.state.ee_pose_topic or "vla/sim/ee_pose", r.env_state_topic or TOPICS["env_state"],
                        TOPICS["success"]],
            "subscribe": [out.command_topic], "reply": [SERVICES["sim_reset"], SERVICES["sim_perturb"]], "execute": []}
    joint_trajectory = out.contract == "ros2_control" or (
        out.ik is not None and out.ik.joint_command == "joint_trajectory")
    if ctx.param("sim", "metaworld") == "panda_reach" and out.trajectory_action is not None and joint_trajectory:
        uses["execute"].append(out.trajectory_action.name)
    return uses


def _imagination_monitor(ctx: NodeContext) -> dict[str, list[str]]:
    monitor = ctx.robot.monitor
    camera = ctx.param("camera", "") or (monitor.camera if monitor and monitor.camera else "")
    return {"publish": [TOPICS["divergence"]],
            "subscribe": [TOPICS["imagined"], TOPICS["action_chunk"],
                          *_cameras(ctx.robot, [camera] if camera else None)]}


def _evaluator(ctx: NodeContext) -> dict[str, list[str]]:
    r = ctx.robot
    monitor_camera = r.monitor.camera if r.monitor is not None and r.monitor.camera else r.cameras[0].name
    uses = _task_runner_part(r.env_state_topic)
    uses["subscribe"] += [TOPICS["policy_status"], TOPICS["divergence"], TOPICS["imagined"], TOPICS["action_chunk"],
                          *_cameras(r, [monitor_camera])]
    uses["publish"] += [TOPICS["episode_result"]]
    uses["request"].append(SERVICES["sim_perturb"])              # evaluator.perturbation (sim/perturbation.py)
    if ctx.param("mode", "closed_loop") == "replay":
        uses["subscribe"] += [TOPICS["dry_run_command"], TOPICS["replay_episode"], TOPICS["executor_status"]]
        if r.output.contract == "sim":
            uses["subscribe"].append(r.output.command_topic)
        uses["request"].append(SERVICES["replay_start"])
    if bool(ctx.param("record", True)):
        uses["subscribe"] += _recorded(ctx)
    # the lockstep check reads `lockstep` through rclpy's AsyncParameterClient, which opens all six
    lockstep_nodes = [n for n in ctx.param("lockstep_nodes", ["sim_bridge", "executor"]) if n]
    uses["request"] += [f"{n}/{s}" for n in lockstep_nodes for s in PARAMETER_SERVICES]
    return uses


def _replay(ctx: NodeContext) -> dict[str, list[str]]:
    """The bag's topics: what the graph's evaluator records, less what the replay excludes (the graph
    produces it live), renamed by `remap`, restricted to `topics` when set."""
    recorder = next((s for s in ctx.graph.nodes if s.executable == "vla_evaluator"), None)
    recorded = [t for t in node_parameter(recorder, "record_topics", [""]) if t] if recorder else []
    only = [t for t in ctx.param("topics", [""]) if t]
    exclude = set(t for t in ctx.param("exclude_topics", ["/clock"]) if t)
    remap = dict(entry.split(":=", 1) for entry in ctx.param("remap", [""]) if entry)
    played = [remap.get(t, t) for t in recorded if t not in exclude and (not only or t in only)]
    uses = {"publish": [*played, TOPICS["replay_episode"]], "reply": [SERVICES["replay_start"]], "subscribe": []}
    if bool(ctx.param("publish_clock", True)):
        uses["publish"].append("/clock")
    if bool(ctx.param("pace", False)):
        uses["subscribe"].append(ctx.param("pace_answer_topic", TOPICS["dry_run_command"]))
    return uses


USES = {"vla_perception": _perception, "vla_policy": _policy, "vla_executor": _executor,
        "vla_task_runner": _task_runner, "vla_lifecycle_manager": _lifecycle_manager, "vla_sim_bridge": _sim_bridge,
        "vla_imagination_monitor": _imagination_monitor, "vla_evaluator": _evaluator, "vla_replay": _replay}


# ---- the policy ---------------------------------------------------------------------------------
def node_uses(ctx: NodeContext) -> dict[str, list[str]]:
    """Every name a node's code uses, by kind, as the code names it (relative, absolute or ~)."""
    if ctx.spec.executable not in USES:
        raise GraphConfigError(f"{ctx.graph.name}: node '{ctx.spec.name}': executable '{ctx.spec.executable}' "
                               "has no access-control entry in vla_policy_node/security.py")
    uses = {k: list(v) for k, v in USES[ctx.spec.executable](ctx).items()}
    for kind in KINDS:
        uses.setdefault(kind, [])
    uses["publish"] += ["/rosout", "/parameter_events"]
    uses["reply"] += [f"~/{s}" for s in NODE_SERVICES]
    if ctx.spec.use_sim_time:
        uses["subscribe"].append("/clock")
    if ctx.spec.executable in MANAGED_EXECUTABLES:
        uses["reply"] += [f"~/{s}" for s in LIFECYCLE_SERVICES]
        uses["publish"].append("~/transition_event")
    if ctx.spec.executable in DIAGNOSED_EXECUTABLES:
        uses["publish"].append(DIAGNOSTICS_TOPIC)
    return uses


def privileged_services(graph: GraphSpec, ns: str) -> set[str]:
    """Arming, the e-stop and the executor's parameter changes, fully qualified (none without an executor)."""
    executor = next((s for s in graph.nodes if s.executable == "vla_executor"), None)
    if executor is None:
        return set()
    remaps = {**CLOCK_REMAP, **executor.remap}
    names = [SERVICES["set_armed"], SERVICES["estop"], "~/set_parameters", "~/set_parameters_atomically"]
    return {resolve(n, ns, executor.name, remaps) for n in names}


def may_request_privileged(spec: NodeSpec, graph: GraphSpec) -> bool:
    """The task runner and the lifecycle manager; the evaluator only where neither runs."""
    drivers = {"vla_task_runner", "vla_lifecycle_manager"}
    if spec.executable == "vla_evaluator":
        return not drivers & {s.executable for s in graph.nodes}
    return spec.executable in PRIVILEGED_EXECUTABLES


def enclave_path(graph: GraphSpec, ns: str, node: str) -> str:
    return f"/{graph.name}{ns}/{node}"


def graph_policy(graph: GraphSpec, namespace: str = "") -> dict[str, Profile]:
    """Enclave path -> the profile of the node that runs in it."""
    ns = namespace_prefix(namespace)
    robot = load_robot(graph.robot).config
    privileged = privileged_services(graph, ns)
    executables = {s.executable for s in graph.nodes}
    policy = {}
    for spec in graph.nodes:
        ctx = NodeContext(spec, graph, robot)
        remaps = {**CLOCK_REMAP, **spec.remap}
        profile = Profile(ns or "/", spec.name)
        for kind, names in node_uses(ctx).items():
            profile.allow[kind] = {resolve(n, ns, spec.name, remaps) for n in names if n}
        if spec.executable == OPERATOR_EXECUTABLE:
            profile.allow["request"] |= privileged
        may = may_request_privileged(spec, graph)
        if not may and profile.allow["request"] & privileged:
            raise GraphConfigError(f"{graph.name}: node '{spec.name}' ({spec.executable}) requests "
                                   f"{sorted(profile.allow['request'] & privileged)}, which only the task "
                                   "runner and the lifecycle manager may (the evaluator where neither runs)")
        profile.deny = set() if may else privileged
        policy[enclave_path(graph, ns, spec.name)] = profile
    if "vla_task_runner" in executables:
        command = Profile(ns or "/", TASK_COMMAND)      # rclpy's own entities and the task action
        command.allow["publish"] = {"/rosout", "/parameter_events"}
        command.allow["reply"] = {expand(f"~/{s}", ns, TASK_COMMAND) for s in NODE_SERVICES}
        command.allow["call"] = {expand(RUN_TASK_ACTION, ns, TASK_COMMAND)}
        command.deny = privileged
        policy[enclave_path(graph, ns, TASK_COMMAND)] = command
    return policy


def policy_xml(policy: dict[str, Profile], source: str) -> str:
    """The SROS2 policy document (deterministic: enclaves, kinds and names in a fixed order)."""
    root = ET.Element("policy", version=POLICY_VERSION)
    root.append(ET.Comment(f" generated by vla-sros2-policy ({source}); regenerate it, do not edit "))
    enclaves = ET.SubElement(root, "enclaves")
    for path, profile in sorted(policy.items()):
        profiles = ET.SubElement(ET.SubElement(enclaves, "enclave", path=path), "profiles")
        element = ET.SubElement(profiles, "profile", ns=profile.ns, node=profile.node)
        for kind in KINDS:
            if profile.allow[kind]:
                group, item = ELEMENTS[kind]
                block = ET.SubElement(element, group, {kind: "ALLOW"})
                for name in sorted(profile.allow[kind]):
                    ET.SubElement(block, item).text = name
        if profile.deny:
            block = ET.SubElement(element, "services", request="DENY")
            for name in sorted(profile.deny):
                ET.SubElement(block, "service").text = name
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def source_line(graph: str, namespace: str = "", robot: str = "") -> str:
    """What a policy was generated from, for its header comment (XML comments cannot hold '--')."""
    return ", ".join([f"graph {graph}", *([f"namespace {namespace}"] if namespace else []),
                      *([f"robot {robot}"] if robot else [])])


def generate(graph: str, namespace: str = "", robot: str = "") -> str:
    """The policy document of a graph description (name in config/graphs/ or a path)."""
    spec = load_graph(graph, robot or None)
    return policy_xml(graph_policy(spec, namespace), source_line(graph, namespace, robot))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vla-sros2-policy", description=__doc__.splitlines()[0])
    parser.add_argument("graph", help="graph description: name in config/graphs/ or a path")
    parser.add_argument("--namespace", default="", help="the namespace the graph runs in (vla-graph --namespace)")
    parser.add_argument("--robot", default="", help="robot file instead of the graph's own (launch robot:=)")
    parser.add_argument("-o", "--output", required=True, help="policy file to write ('-': standard output)")
    args = parser.parse_args(argv)
    try:
        text = generate(args.graph, args.namespace, args.robot)
    except (GraphConfigError, FileNotFoundError, ValueError) as exc:
        print(f"vla-sros2-policy: {exc}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"vla-sros2-policy: {args.output}: {len(text.splitlines())} lines "
              f"(ros2 security generate_artifacts -k KEYSTORE -p {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
