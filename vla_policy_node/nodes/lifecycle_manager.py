"""lifecycle_manager: brings the graph's managed nodes up in order and keeps them there (nav2's habit).

At start (autostart) it configures every node of `node_names` in order, then activates them in
order. Every `check_period_s` it reads their states: a node found unconfigured while the graph
should be active (a respawned process: it starts unconfigured when autostart is false) is
configured and activated again, so a restarted policy rejoins without an operator. Services
(std_srvs/Trigger, under the manager's name): startup, pause (deactivate in reverse order: the
executor disarms, the arm holds), resume, shutdown (deactivate and clean up in reverse order:
models freed). /diagnostics: each node's state, how often each was found restarted and brought
back (`recoveries.<node>`), ERROR when one does not answer or refuses.
"""

from __future__ import annotations

import threading

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_srvs.srv import Trigger

from ..core.health import ERROR, WARN, Flag
from .common import run_node
from .diagnostics import Diagnostics
from .parameters import Param, declare

LABELS = {State.PRIMARY_STATE_UNKNOWN: "unknown", State.PRIMARY_STATE_UNCONFIGURED: "unconfigured",
          State.PRIMARY_STATE_INACTIVE: "inactive", State.PRIMARY_STATE_ACTIVE: "active",
          State.PRIMARY_STATE_FINALIZED: "finalized"}
STEPS = {  # target -> transitions from each state on the way there
    "active": {"unconfigured": Transition.TRANSITION_CONFIGURE, "inactive": Transition.TRANSITION_ACTIVATE},
    "inactive": {"unconfigured": Transition.TRANSITION_CONFIGURE, "active": Transition.TRANSITION_DEACTIVATE},
    "unconfigured": {"active": Transition.TRANSITION_DEACTIVATE, "inactive": Transition.TRANSITION_CLEANUP},
}


class LifecycleManagerNode(Node):
    PARAMETERS = (
        Param("node_names", ["perception", "policy", "executor", "task_runner"],
              "the managed nodes (names relative to this node's namespace), configured and activated in this "
              "order, deactivated and cleaned up in reverse"),
        Param("transition_timeout_s", 60.0, "longest wait for one node's transition; configure loads the model (s)",
              (0.1, 3600.0)),
        Param("check_period_s", 1.0, "the nodes' states are read every this many wall seconds (s)", (0.05, 600.0)),
        Param("autostart", True, "bring every node to active at start (false: wait for ~/startup)"),
    )

    def __init__(self, **kwargs):
        super().__init__("lifecycle_manager", **kwargs)
        p = declare(self, self.PARAMETERS)
        self.node_names = [n for n in p.node_names if n]
        self.timeout_s = p.transition_timeout_s
        self.target = "unconfigured"
        self.states = {name: "unknown" for name in self.node_names}
        self.recoveries = {name: 0 for name in self.node_names}   # times found restarted and brought back
        self.problems: dict[str, str] = {}
        self.lock = threading.Lock()              # one sequence of transitions at a time
        group = ReentrantCallbackGroup()
        self.get_state = {n: self.create_client(GetState, f"{n}/get_state", callback_group=group)
                          for n in self.node_names}
        self.change_state = {n: self.create_client(ChangeState, f"{n}/change_state", callback_group=group)
                             for n in self.node_names}
        for name, target in (("startup", "active"), ("resume", "active"), ("pause", "inactive"),
                             ("shutdown", "unconfigured")):
            self.create_service(Trigger, f"~/{name}", lambda req, res, t=target: self.on_request(t, res),
                                callback_group=group)
        self.diagnostics = Diagnostics(self, "lifecycle", "graph", self.health_figures, [
            Flag("unreachable", ERROR, "a managed node does not answer"),
            Flag("failed", ERROR, "a transition failed"), Flag("off_target", WARN, "nodes not at the target state")])
        self.create_timer(p.check_period_s, self.check, callback_group=group,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        if p.autostart:
            threading.Thread(target=self.bring_to, args=("active",), daemon=True, name="startup").start()

    # ---- transitions ------------------------------------------------------------------------
    def call(self, client, request, timeout_s: float):
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        return future.result() if done.wait(timeout_s) else None

    def state_of(self, name: str, timeout_s: float = 5.0) -> str:
        answer = self.call(self.get_state[name], GetState.Request(), timeout_s)
        return "unreachable" if answer is None else LABELS.get(answer.current_state.id, answer.current_state.label)

    def bring_node(self, name: str, target: str) -> bool:
        """Transition one node to `target` step by step; False (named in self.problems) on failure."""
        for _ in range(3):
            state = self.state_of(name, self.timeout_s)
            self.states[name] = state
            if state == target:
                self.problems.pop(name, None)
                return True
            transition = STEPS[target].get(state)
            if transition is None:
                self.problems[name] = f"{name} is {state}; cannot reach {target}"
                return False
            answer = self.call(self.change_state[name], ChangeState.Request(transition=Transition(id=transition)),
                               self.timeout_s)
            if answer is None or not answer.success:
                self.problems[name] = f"{name}: transition {transition} from {state} " + \
                                      ("not answered" if answer is None else "refused")
                self.get_logger().error(self.problems[name])
                return False
        return self.state_of(name) == target

    def bring_to(self, target: str) -> tuple[bool, str]:
        """All nodes to `target`: up in order (configure all, then activate all), down in reverse."""
        with self.lock:
            self.target = target
            order = self.node_names if target == "active" else list(reversed(self.node_names))
            # up: every node configured before any is activated; down: one node at a time, in reverse
            plan = [(n, "inactive") for n in order if self.state_of(n, self.timeout_s) == "unconfigured"] \
                if target == "active" else []
            plan += [(n, target) for n in order]
            for name, stage in plan:
                if not self.bring_node(name, stage):
                    message = f"bringing the graph to {target} stopped: {self.problems.get(name, name)}"
                    self.get_logger().error(message)
                    return False, message
            message = f"{', '.join(order)}: {target}"
            self.get_logger().info(message)
            return True, message

    def on_request(self, target: str, response):
        response.success, response.message = self.bring_to(target)
        return response

    def check(self) -> None:
        """Read every node's state; one that came back unconfigured (respawned) is brought back."""
        if self.lock.locked():
            return
        for name in self.node_names:
            self.states[name] = self.state_of(name, 2.0)
        lost = [n for n in self.node_names if self.states[n] == "unconfigured" and self.target != "unconfigured"]
        for name in lost:
            self.get_logger().warning(f"{name} is unconfigured (restarted?); bringing it to {self.target}")
            with self.lock:
                if self.target == "active":
                    back = self.bring_node(name, "inactive") and self.bring_node(name, "active")
                else:
                    back = self.bring_node(name, self.target)
                self.recoveries[name] += int(bool(back))

    def health_figures(self) -> dict:
        return {"target": self.target, "states": dict(self.states), "recoveries": dict(self.recoveries),
                "problems": dict(self.problems),
                "unreachable": any(s == "unreachable" for s in self.states.values()),
                "failed": bool(self.problems),
                "off_target": any(s != self.target for s in self.states.values())}


def main(args=None):
    raise SystemExit(run_node(LifecycleManagerNode, args, multithreaded=True))


if __name__ == "__main__":
    main()
