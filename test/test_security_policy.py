"""The SROS2 access-control policies (config/security/<graph>.xml, vla-sros2-policy), checked as
documents (the Fast DDS wheels here have no DDS-Security): the shipped files are a fresh
generation; every node of a graph has its enclave and profile; each node is granted what it
really creates (nodes built in-process and read back from the ROS graph) and nothing more; no
wildcards; arming, the e-stop and the executor's parameters only for the nodes that drive the
robot."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET

import pytest

from vla_policy_node import security
from vla_policy_node.core.embodiment import config_root
from vla_policy_node.graph import GraphConfigError, load_graph
from vla_policy_node.graph_runner import node_command

GRAPHS = sorted(p.stem for p in (config_root() / "graphs").glob("*.yaml"))
NAME = re.compile(r"^(/[A-Za-z_][A-Za-z0-9_]*)+$")          # a fully qualified ROS name, nothing pattern-like
SCHEMA = {"topics": ("topic", {"publish", "subscribe"}), "services": ("service", {"reply", "request"}),
          "actions": ("action", {"call", "execute"})}
ACTION_SERVICES = ("send_goal", "cancel_goal", "get_result")
ACTION_TOPICS = ("feedback", "status")


def parse(text: str) -> dict[str, tuple[str, str, dict[str, set[str]], set[str]]]:
    """Enclave path -> (ns, node, ALLOW grants by kind, DENY'd requests), checking the SROS2 0.2.0 layout."""
    root = ET.fromstring(text)
    assert root.tag == "policy" and root.get("version") == "0.2.0"
    assert [c.tag for c in root] == ["enclaves"]
    out = {}
    for enclave in root.find("enclaves"):
        assert enclave.tag == "enclave" and enclave.get("path") not in out
        (profiles,) = list(enclave)
        (profile,) = list(profiles)
        assert profiles.tag == "profiles" and profile.tag == "profile"
        allow, deny = {k: set() for k in security.KINDS}, set()
        for block in profile:
            item, kinds = SCHEMA[block.tag]
            assert block.attrib and set(block.attrib) <= kinds and set(block.attrib.values()) <= {"ALLOW", "DENY"}
            names = {e.text for e in block}
            assert all(e.tag == item for e in block) and all(NAME.match(n) for n in names), names
            for kind, rule in block.attrib.items():
                if rule == "ALLOW":
                    allow[kind] |= names
                else:
                    assert kind == "request"
                    deny |= names
        out[enclave.get("path")] = (profile.get("ns"), profile.get("node"), allow, deny)
    return out


@pytest.mark.parametrize("graph", GRAPHS)
def test_shipped_policy_is_a_fresh_generation(graph):
    shipped = config_root() / "security" / f"{graph}.xml"
    assert shipped.is_file(), f"{shipped} missing: vla-sros2-policy {graph} -o {shipped}"
    assert shipped.read_text() == security.generate(graph), f"{shipped} is stale: vla-sros2-policy {graph} -o {shipped}"


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("namespace", ["", "robot1"])
def test_every_node_has_its_enclave_and_only_drivers_may_arm(graph, namespace):
    spec = load_graph(graph)
    ns = f"/{namespace}" if namespace else ""
    policy = parse(security.generate(graph, namespace))
    nodes = {f"/{graph}{ns}/{s.name}": s for s in spec.nodes}
    assert set(nodes) <= set(policy)
    has_task_runner = any(s.executable == "vla_task_runner" for s in spec.nodes)
    assert set(policy) - set(nodes) == ({f"/{graph}{ns}/vla_task"} if has_task_runner else set())
    for path, (profile_ns, node, allow, _) in policy.items():
        assert profile_ns == (ns or "/") and path.endswith(f"/{node}")
        if namespace and graph.endswith("bringup"):   # relative names throughout: all in the namespace
            outside = {n for names in allow.values() for n in names if not n.startswith(ns + "/")}
            assert outside <= {"/rosout", "/parameter_events", "/diagnostics"}, (path, outside)

    privileged = {f"{ns}/vla/executor/set_armed", f"{ns}/vla/executor/emergency_stop",
                  f"{ns}/executor/set_parameters", f"{ns}/executor/set_parameters_atomically"}
    has_executor = any(s.executable == "vla_executor" for s in spec.nodes)
    callers = {policy[p][1] for p in policy if policy[p][2]["request"] & privileged}
    drivers = {s.name for s in spec.nodes if s.executable in ("vla_task_runner", "vla_lifecycle_manager")}
    expected = {"task_runner", "lifecycle_manager"} if graph.endswith("bringup") else {"evaluator"}
    assert callers <= (drivers or {s.name for s in spec.nodes if s.executable == "vla_evaluator"}) == expected
    assert ("lifecycle_manager" in callers) == ("lifecycle_manager" in drivers)
    for path, (_, node, allow, deny) in policy.items():
        assert not allow["reply"] & privileged or node == "executor"
        if node not in callers:
            assert deny == (privileged if has_executor else set()), path
        assert not allow["request"] & deny, path
    if has_executor:
        lifecycle = [p for p in policy.values() if p[1] == "lifecycle_manager"]
        assert all(privileged <= p[2]["request"] for p in lifecycle)     # the operator's handle


# ---- each node's grants against what the node creates --------------------------------------
def granted_entities(allow: dict[str, set[str]]) -> dict[str, set[str]]:
    """ALLOW grants as the graph shows entities (an action is three services and two topics)."""
    out = {"publish": set(allow["publish"]), "subscribe": set(allow["subscribe"]), "reply": set(allow["reply"]),
           "request": set(allow["request"])}
    for kind, (services, topics) in (("execute", ("reply", "publish")), ("call", ("request", "subscribe"))):
        for action in allow[kind]:
            out[services] |= {f"{action}/_action/{s}" for s in ACTION_SERVICES}
            out[topics] |= {f"{action}/_action/{t}" for t in ACTION_TOPICS}
    return out


def node_classes():
    from vla_policy_node.nodes.executor import ExecutorNode
    from vla_policy_node.nodes.lifecycle_manager import LifecycleManagerNode
    from vla_policy_node.nodes.perception import PerceptionNode
    from vla_policy_node.nodes.policy import PolicyNode
    from vla_policy_node.nodes.sim_bridge import SimBridgeNode
    from vla_policy_node.nodes.task_runner import TaskRunnerNode
    return {"vla_perception": PerceptionNode, "vla_policy": PolicyNode, "vla_executor": ExecutorNode,
            "vla_task_runner": TaskRunnerNode, "vla_lifecycle_manager": LifecycleManagerNode,
            "vla_sim_bridge": SimBridgeNode}


def created_entities(graph: str, namespace: str, overrides: dict) -> dict[str, dict[str, set[str]]]:
    """Every node of `graph` built in one process with its graph command line (configured, never
    activated: nothing runs), then read back from the ROS graph: node -> kind -> names."""
    import rclpy
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

    spec = load_graph(graph)
    classes = node_classes()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=97)
    built = []
    try:
        for node_spec in spec.nodes:
            args = node_command(node_spec, overrides, namespace=namespace)[1:]
            node = classes[node_spec.executable](cli_args=args, context=context)
            if isinstance(node, LifecycleNode):
                assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node_spec.name
            built.append(node)
        probe = rclpy.create_node("probe", context=context, namespace="/probe")
        ns = f"/{namespace}" if namespace else "/"
        seen, previous, deadline = {}, None, time.monotonic() + 20.0
        while time.monotonic() < deadline:        # the graph cache settles (local entities: quickly)
            seen = {n.get_name(): {
                "publish": {t for t, _ in probe.get_publisher_names_and_types_by_node(n.get_name(), ns)},
                "subscribe": {t for t, _ in probe.get_subscriber_names_and_types_by_node(n.get_name(), ns)},
                "reply": {s for s, _ in probe.get_service_names_and_types_by_node(n.get_name(), ns)},
                "request": {s for s, _ in probe.get_client_names_and_types_by_node(n.get_name(), ns)}}
                for n in built}
            if seen == previous:
                break
            previous = seen
            time.sleep(0.5)
        return seen
    finally:
        for node in built:
            if isinstance(node, LifecycleNode):
                node.trigger_cleanup()                 # stops what configure started (the control loop)
            node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("graph, namespace", [("robot_bringup", ""), ("panda_bringup", "robot1")])
def test_each_node_is_granted_what_it_creates_and_nothing_more(graph, namespace):
    """robot_bringup (a physical arm) at the root and panda_bringup (the same nodes with the embedded
    Panda and its /clock, remapped into the namespace) in one: every node's live entities against
    its profile."""
    overrides = {"policy": {"backend": "reach_ik"},            # the model does not change the names
                 "lifecycle_manager": {"autostart": False}}   # nothing is brought up
    created = created_entities(graph, namespace, overrides)
    ns = f"/{namespace}" if namespace else ""
    policy = parse(security.generate(graph, namespace))
    privileged = {f"{ns}/vla/executor/set_armed", f"{ns}/vla/executor/emergency_stop",
                  f"{ns}/executor/set_parameters", f"{ns}/executor/set_parameters_atomically"}
    for node, entities in created.items():
        granted = granted_entities(policy[f"/{graph}{ns}/{node}"][2])
        for kind, names in entities.items():
            assert names <= granted[kind], f"{node} {kind}s {sorted(names - granted[kind])} without a grant"
            unused = granted[kind] - names
            if node == "lifecycle_manager" and kind == "request":
                unused -= privileged                           # the operator's handle, used from a terminal
            assert not unused, f"{node} is granted {kind} {sorted(unused)} it does not use"


def test_the_command_writes_the_file_and_names_errors(tmp_path, capsys):
    out = tmp_path / "policy.xml"
    assert security.main(["robot_bringup", "--namespace", "left_arm", "-o", str(out)]) == 0
    assert out.read_text() == security.generate("robot_bringup", "left_arm")
    assert "generated by vla-sros2-policy (graph robot_bringup, namespace left_arm)" in out.read_text()
    assert security.main(["no_such_graph", "-o", str(out)]) == 2
    assert "no_such_graph" in capsys.readouterr().err


def test_a_node_that_would_arm_beside_the_task_runner_is_refused(tmp_path):
    """The evaluator arms through the task runner's code; beside a task runner it may not."""
    graph = tmp_path / "both.yaml"
    graph.write_text("name: both\nrobot: metaworld_sawyer\nnodes:\n"
                     "  - {name: executor, executable: vla_executor}\n"
                     "  - {name: task_runner, executable: vla_task_runner}\n"
                     "  - {name: evaluator, executable: vla_evaluator}\n")
    with pytest.raises(GraphConfigError, match="node 'evaluator'.*set_armed"):
        security.generate(str(graph))
