"""Fault injection through the real graph: what the arm does when a part of the graph fails.

Each case runs the `arm_isaac` graph (embedded MuJoCo Panda, JointState commands on
/joint_command, the reach_ik policy; every node its own process, free-running, so the control
loop keeps its rate whatever happens) for one reach episode and injects one fault once the arm
moves: a process killed (the graph runner respawns it and it rejoins the running episode from
/vla/episode), a process silent long enough for DDS discovery to drop it, the robot frozen, the
sim clock jumping back or forward, observations dropped or robot states cut by a relay placed
between two nodes (a graph remap), bad chunks published beside the policy's, an e-stop, a disarm,
arming while the state is stale.
The executor's command log (every command with its hold reason) gives the figures:

- commands outside limits: joint position bounds and max_step per period (must be 0);
- time to hold: from the last executed action to the first hold command, in control periods;
- braking: the largest joint acceleration of the commands after the fault over its limit (<= 1);
- max step and jerk of the commands around the fault and around the recovery;
- time to recover: from the fault to the first executed action of a chunk computed after it;
- the episode's outcome and reason, restarts of the runner, rejections by reason.

`vla-bench faults` writes artifacts/bench/faults.json and faults.md; test/test_faults.py runs
the same cases and asserts the targets.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.embodiment import load_robot

GRAPH = "arm_isaac"
ROBOT = "panda_isaac"
SEED = 100
TOLERANCE = 1e-6


@dataclass
class FaultCase:
    name: str
    description: str
    inject: Callable[["FaultContext"], None]
    expect_success: bool = True       # the episode still reaches its target
    after_moving: int = 10            # inject once this many commands moved the arm (0.2 s of motion)
    episodes: int = 1                 # >1: inject when the first episode ends, judge the last one
    max_steps: int = 1500             # the evaluator's step limit (sim steps, 50 Hz)
    overrides: dict = field(default_factory=dict)
    relays: dict = field(default_factory=dict)    # name -> Relay spec: a node's topic rerouted through the injector


class FaultContext:
    """What an injection may touch: the graph's live processes and a ROS node beside the graph."""

    def __init__(self, processes: dict, observer):
        self.processes = processes
        self.observer = observer
        self.notes: dict = {}

    def signal(self, node: str, sig: int) -> None:
        self.processes[node].send_signal(sig)

    def kill(self, node: str) -> None:
        self.notes["killed_pid"] = self.processes[node].pid
        self.notes["killed"] = node
        self.signal(node, signal.SIGKILL)

    def freeze(self, node: str, seconds: float, during: Callable[[], None] | None = None) -> None:
        """Stop `node` (SIGSTOP) for `seconds`; `during()` is called every 0.5 s meanwhile."""
        self.signal(node, signal.SIGSTOP)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(min(0.5, max(end - time.monotonic(), 0.0)))
                if during is not None:
                    during()
        finally:
            self.signal(node, signal.SIGCONT)


@dataclass
class RelaySpec:
    """`node` publishes `topic` under `topic_in` (a graph remap); the injector relays it back."""
    node: str
    topic: str
    msg_type: str                     # "sensor_msgs.msg.JointState"
    qos: str                          # "sensor" | "reliable"

    @property
    def topic_in(self) -> str:
        return "/vla/fault" + self.topic


# ---- the cases ----------------------------------------------------------------------------------

def _republish(ctx: FaultContext, edit: Callable, pick: str = "latest") -> None:
    """Publish a copy of a chunk the policy sent (the latest or the first), edited."""
    chunk = ctx.observer.captured_chunk(pick)
    ctx.notes["republished_chunk"] = int(chunk.chunk_id)
    edit(chunk)
    ctx.observer.chunk_pub.publish(chunk)


def _old_episode(chunk) -> None:
    chunk.episode_id = "reach_s99"


def _unseen(chunk) -> None:
    """An id never sent: the executor must judge the chunk by its stamp, not as a duplicate."""
    chunk.chunk_id = 10**9 + chunk.chunk_id


def _delay_past_horizon(ctx: FaultContext) -> None:
    time.sleep(1.0)                   # > horizon 16 x 20 ms: every action of the chunk is in the past
    _republish(ctx, _unseen, pick="first")


def _estop(ctx: FaultContext) -> None:
    ctx.notes["estop"] = ctx.observer.call("estop", engage=True, reason="fault suite")


def _disarm_rearm(ctx: FaultContext) -> None:
    ctx.notes["disarm"] = ctx.observer.call("set_armed", armed=False)
    time.sleep(1.0)
    ctx.notes["rearm"] = ctx.observer.call("set_armed", armed=True)


def _move_target(ctx: FaultContext) -> None:
    ctx.notes["perturb"] = ctx.observer.call("perturb", kind="object", offset_m=[0.0, 0.1, 0.0], at_step=0)


def _drop_observations(ctx: FaultContext) -> None:
    relay = ctx.observer.relays["observation"]
    ctx.notes["observations_passed_before"] = relay.passed
    relay.drop_fraction = 0.3


def _clock_jump(seconds: float) -> Callable[[FaultContext], None]:
    def inject(ctx: FaultContext) -> None:
        ctx.notes["clock_jump_s"] = seconds
        ctx.notes["set_parameter"] = ctx.observer.set_sim_clock_offset(CLOCK_START_S + seconds)
    return inject


def _arm_while_stale(ctx: FaultContext) -> None:
    """Cut /joint_states mid-motion, disarm and arm again while no state comes, then restore it."""
    relay = ctx.observer.relays["joint_states"]
    relay.closed = True
    time.sleep(0.5)                   # > max_state_age_s 0.25: the executor holds on the stale state
    ctx.notes["disarm"] = ctx.observer.call("set_armed", armed=False)
    ctx.notes["arm"] = ctx.observer.call("set_armed", armed=True)
    time.sleep(1.0)
    relay.closed = False


def _discovery_lost(ctx: FaultContext) -> None:
    """Stop the policy past the DDS participant lease (Fast DDS: 20 s): its peers drop it from
    discovery; after SIGCONT it announces itself again and is matched anew."""
    counts = []
    topic = ctx.observer.chunk_pub.topic_name
    deadline = time.monotonic() + 10.0          # the injector's own publisher and the policy's, matched
    while ctx.observer.node.count_publishers(topic) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    before = ctx.observer.node.count_publishers(topic)
    ctx.freeze("policy", DISCOVERY_FREEZE_S,
               during=lambda: counts.append(ctx.observer.node.count_publishers(topic)))
    deadline = time.monotonic() + 15.0
    while ctx.observer.node.count_publishers(topic) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    lost = next((i for i, n in enumerate(counts) if n < before), None)
    ctx.notes["discovery_lost_after_s"] = None if lost is None else 0.5 * (lost + 1)
    ctx.notes["chunk_publishers_before"] = before
    ctx.notes["chunk_publishers_min_while_stopped"] = min(counts) if counts else None
    ctx.notes["chunk_publishers_after"] = ctx.observer.node.count_publishers(topic)


CLOCK_START_S = 100.0                 # clock cases: sim time starts here so it can jump back
DISCOVERY_FREEZE_S = 25.0
OBSERVATION_RELAY = {"observation": RelaySpec("perception", "/vla/observation", "vla_msgs.msg.Observation", "sensor")}
JOINT_STATE_RELAY = {"joint_states": RelaySpec("sim_bridge", "/joint_states", "sensor_msgs.msg.JointState",
                                               "reliable")}

CASES = [
    FaultCase("policy_killed", "policy process SIGKILLed mid-motion; the runner respawns it",
              lambda ctx: ctx.kill("policy")),
    FaultCase("perception_killed", "perception process SIGKILLed mid-motion; the runner respawns it",
              lambda ctx: ctx.kill("perception")),
    FaultCase("policy_killed_between_episodes", "policy process SIGKILLed as an episode ends: the next "
              "episode's reset request finds a dead server (discovery lists it until its lease ends)",
              lambda ctx: ctx.kill("policy"), episodes=2),
    FaultCase("policy_discovery_lost", f"policy process stopped {DISCOVERY_FREEZE_S:.0f} s, past the DDS "
              "participant lease: discovery drops it, then matches it again", _discovery_lost,
              max_steps=3000),
    FaultCase("robot_frozen", "the sim/robot process stopped (SIGSTOP) for 1.5 s, then continued; under "
              "use_sim_time the graph's clock stops with it, so no command falls due meanwhile",
              lambda ctx: ctx.freeze("sim_bridge", 1.5)),
    FaultCase("observations_dropped", "30% of the observations dropped between perception and policy from "
              "mid-motion on (a relay)", _drop_observations, relays=OBSERVATION_RELAY),
    FaultCase("clock_back", "sim clock jumped 5 s back mid-motion (a simulator's timeline reset under "
              "use_sim_time; the world stays)", _clock_jump(-5.0),
              overrides={"sim_bridge": {"clock_offset_s": str(CLOCK_START_S)}}),
    FaultCase("clock_forward", "sim clock jumped 5 s forward mid-motion", _clock_jump(5.0),
              overrides={"sim_bridge": {"clock_offset_s": str(CLOCK_START_S)}}),
    FaultCase("chunk_duplicated", "the latest chunk published a second time",
              lambda ctx: _republish(ctx, lambda c: None)),
    FaultCase("chunk_reordered", "an old chunk (the first one seen, under a new id) arriving after newer ones",
              lambda ctx: _republish(ctx, _unseen, pick="first")),
    FaultCase("chunk_delayed", "a chunk published again 1 s later, past its horizon", _delay_past_horizon),
    FaultCase("chunk_old_episode", "a chunk of another episode", lambda ctx: _republish(ctx, _old_episode)),
    FaultCase("target_moved", "the reach target displaced 10 cm mid-motion (vla/sim/perturb): the plan is "
              "wrong from the next step; the policy must turn to the new target", _move_target),
    FaultCase("estop_in_motion", "e-stop engaged mid-motion (latched: the episode cannot finish)", _estop,
              expect_success=False, max_steps=200),
    FaultCase("disarm_in_motion", "disarmed mid-motion, armed again 1 s later", _disarm_rearm),
    FaultCase("arm_while_stale", "/joint_states cut mid-motion (a relay); disarmed and armed again while "
              "no state comes; restored 1.5 s after the cut", _arm_while_stale, relays=JOINT_STATE_RELAY),
]
CASE_NAMES = [c.name for c in CASES]


# ---- a ROS node beside the graph ---------------------------------------------------------------

class SideNode:
    """A ROS node beside the graph in its own rclpy context (ROS domain `domain_id`), spun on a
    thread: what fault injectors and observers build on. Call start() once subscribed."""

    def __init__(self, name: str, domain_id: int):
        import rclpy

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)

    def start(self) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self.thread.join(2.0)


class Observer(SideNode):
    """Counts the executor's commands, keeps the policy's chunks, publishes bad ones and calls the
    executor's services; its own rclpy context in the graph's ROS domain."""

    def __init__(self, domain_id: int, command_topic: str, relays: dict | None = None):
        from sensor_msgs.msg import JointState
        from vla_msgs.msg import ActionChunk, EpisodeResult
        from vla_msgs.srv import EmergencyStop, Perturb, SetArmed

        from ..nodes.common import RELIABLE_QOS, SERVICES, TOPICS

        super().__init__("fault_injector", domain_id)
        self.commands = 0
        self.moving = 0                            # commands that changed the target position
        self.last_position = None
        self.last_command_stamp = float("nan")     # robot clock, s
        self.chunks = []
        self.lock = threading.Lock()
        self.node.create_subscription(JointState, command_topic, self._on_command, RELIABLE_QOS)
        self.node.create_subscription(ActionChunk, TOPICS["action_chunk"], self._on_chunk, RELIABLE_QOS)
        self.results = []
        self.node.create_subscription(EpisodeResult, TOPICS["episode_result"], self.results.append, RELIABLE_QOS)
        self.chunk_pub = self.node.create_publisher(ActionChunk, TOPICS["action_chunk"], RELIABLE_QOS)
        self.clients = {"estop": (self.node.create_client(EmergencyStop, SERVICES["estop"]), EmergencyStop),
                        "set_armed": (self.node.create_client(SetArmed, SERVICES["set_armed"]), SetArmed),
                        "perturb": (self.node.create_client(Perturb, SERVICES["sim_perturb"]), Perturb)}
        from rcl_interfaces.srv import SetParameters
        self.param_client = self.node.create_client(SetParameters, "/sim_bridge/set_parameters")
        self.relays = {name: Relay(self.node, spec) for name, spec in (relays or {}).items()}
        self.start()

    def _on_command(self, msg) -> None:
        self.last_command_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        position = np.asarray(msg.position)
        if self.last_position is not None and np.abs(position - self.last_position).max() > 1e-6:
            self.moving += 1
        self.last_position = position
        self.commands += 1

    def _on_chunk(self, msg) -> None:
        with self.lock:
            self.chunks.append(msg)

    def captured_chunk(self, pick: str, timeout_s: float = 10.0):
        """The latest chunk of the policy seen, or the first one once a newer one came (its
        subscription may match after the first chunks crossed: then it waits for more)."""
        needed = 1 if pick == "latest" else 2
        deadline = time.monotonic() + timeout_s
        while len(self.chunks) < needed and time.monotonic() < deadline:
            time.sleep(0.005)
        with self.lock:
            if len(self.chunks) < needed:
                raise RuntimeError(f"{len(self.chunks)} chunks of the policy seen after {timeout_s:.0f} s")
            return self.chunks[-1 if pick == "latest" else 0]

    def call(self, name: str, **fields) -> str:
        client, srv = self.clients[name]
        if not client.wait_for_service(timeout_sec=10.0):
            raise RuntimeError(f"service {client.srv_name} not available")
        done = threading.Event()
        future = client.call_async(srv.Request(**fields))
        future.add_done_callback(lambda _: done.set())
        if not done.wait(10.0):
            raise RuntimeError(f"service {client.srv_name} did not answer")
        return future.result().message

    def set_sim_clock_offset(self, seconds: float) -> str:
        """Set the sim bridge's clock_offset_s parameter (the sim clock jumps by the change)."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        if not self.param_client.wait_for_service(timeout_sec=10.0):
            raise RuntimeError("service /sim_bridge/set_parameters not available")
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(seconds))
        request = SetParameters.Request(parameters=[Parameter(name="clock_offset_s", value=value)])
        done = threading.Event()
        future = self.param_client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(10.0):
            raise RuntimeError("/sim_bridge/set_parameters did not answer")
        result = future.result().results[0]
        if not result.successful:
            raise RuntimeError(f"clock_offset_s {seconds}: refused: {result.reason}")
        return f"clock_offset_s {seconds}"

    def wait_results(self, n: int, timeout_s: float) -> bool:
        """Wait until the evaluator has published `n` episode results."""
        deadline = time.monotonic() + timeout_s
        while len(self.results) < n and time.monotonic() < deadline:
            time.sleep(0.002)
        return len(self.results) >= n

    def wait_moving(self, n: int, timeout_s: float) -> bool:
        """Wait until `n` commands moved the arm."""
        deadline = time.monotonic() + timeout_s
        while self.moving < n and time.monotonic() < deadline:
            time.sleep(0.002)
        return self.moving >= n


class Relay:
    """Forwards `spec.topic_in` to `spec.topic` in the injector's node: everything, a fraction
    (drop_fraction, seeded), or nothing while `closed`."""

    def __init__(self, node, spec: RelaySpec, seed: int = 0):
        import importlib

        from ..nodes.common import RELIABLE_QOS, SENSOR_QOS

        qos = SENSOR_QOS if spec.qos == "sensor" else RELIABLE_QOS
        self.closed = False
        self.drop_fraction = 0.0
        self.rng = np.random.default_rng(seed)
        self.passed = self.dropped = 0
        module, _, name = spec.msg_type.rpartition(".")
        msg_class = getattr(importlib.import_module(module), name)
        self.pub = node.create_publisher(msg_class, spec.topic, qos)
        node.create_subscription(msg_class, spec.topic_in, self._on_message, qos)

    def _on_message(self, msg) -> None:
        if self.closed or (self.drop_fraction > 0 and self.rng.random() < self.drop_fraction):
            self.dropped += 1
            return
        self.passed += 1
        self.pub.publish(msg)


# ---- figures from the executor's command log ---------------------------------------------------

def episode_commands(commands: list, resets: list, fault_stamp: float) -> list:
    """The commands of the episode the fault hit: after the executor's last reset before it (a
    simulator reset moves the robot, so the first hold after it starts from a new position)."""
    start = max((stamp for stamp, _ in resets if stamp <= fault_stamp), default=float("-inf"))
    return [c for c in commands if c[0] > start]


def undo_clock_jump(commands: list, jump_s: float, dt: float) -> list:
    """The command log on one continuous timeline: from the first step between two commands that
    is about `jump_s` (the clock's jump) on, stamps are shifted so that step is one control period."""
    for i in range(1, len(commands)):
        step = commands[i][0] - commands[i - 1][0]
        if abs(step - jump_s) < abs(jump_s) / 2:
            return commands[:i] + [(round(c[0] - step + dt, 6), *c[1:]) for c in commands[i:]]
    return commands


def command_figures(commands: list, fault_stamp: float, limits, dt: float) -> dict:
    """Figures of the command log (stamp s, command, chunk id, index, merged, hold reason) around a
    fault at `fault_stamp` (robot clock): limits, time to hold, braking, steps, jerk, recovery."""
    stamps = np.asarray([c[0] for c in commands])
    q = np.asarray([c[1] for c in commands], dtype=np.float64)
    chunk_ids = np.asarray([c[2] for c in commands])
    holding = np.asarray([bool(c[5]) for c in commands])
    lo, hi = np.asarray(limits.action_min), np.asarray(limits.action_max)
    step_max = np.asarray(limits.max_step)
    accel_max = np.asarray(limits.joint_acceleration_max)
    steps = np.abs(np.diff(q, axis=0))
    outside = (q < lo - TOLERANCE) | (q > hi + TOLERANCE)
    bad_steps = steps > step_max + TOLERANCE
    n_outside = int(outside.any(axis=1).sum() + bad_steps.any(axis=1).sum())

    after = np.flatnonzero(stamps > fault_stamp + 1e-9)
    first_hold = next((i for i in after if holding[i]), None)
    reason = commands[first_hold][5] if first_hold is not None else ""
    while first_hold is not None and first_hold > 0 and holding[first_hold - 1]:
        first_hold -= 1               # the hold began before the fault (a chunk was due): from its start
    last_exec = None
    if first_hold is not None:
        executed_before = np.flatnonzero(~holding[:first_hold])
        last_exec = int(executed_before[-1]) if len(executed_before) else None
    recover = None
    if first_hold is not None:
        recover = next((i for i in range(first_hold, len(commands)) if not holding[i] and chunk_ids[i] >= 0), None)

    def window(a: int, b: int) -> dict:
        seg = q[max(a, 0): min(b, len(q))]
        if len(seg) < 4:
            return {"max_step_ratio": None, "max_jerk": None}
        d1 = np.abs(np.diff(seg, axis=0))
        d3 = np.abs(np.diff(seg, n=3, axis=0)) / dt ** 3
        return {"max_step_ratio": round(float((d1 / step_max).max()), 3), "max_jerk": round(float(d3.max()), 1)}

    fault_index = int(after[0]) if len(after) else len(q)
    figures = {
        "commands": len(commands),
        "commands_outside_limits": n_outside,
        "max_gap_periods": None if len(after) < 2 else
        round(float(np.diff(stamps[max(after[0] - 1, 0):]).max() / dt), 2),
        "time_to_hold_periods": None if first_hold is None or last_exec is None else
        round(float((stamps[first_hold] - stamps[last_exec]) / dt), 2),
        # control ticks from the last executed action to the first hold: 1 = the very next tick held
        # (the time above also counts a tick the OS ran late, which max_gap_periods shows)
        "hold_after_ticks": None if first_hold is None or last_exec is None or len(commands[0]) < 7 else
        int(commands[first_hold][6] - commands[last_exec][6]),
        "hold_reason": reason,        # of the first hold after the fault
        "hold_reasons": {r: int(n) for r, n in zip(*np.unique([c[5] for c in commands[fault_index:] if c[5]],
                                                              return_counts=True))},
        "braking_accel_ratio": None,
        "at_fault": window(fault_index - 5, fault_index + 50),
        "at_recovery": window(recover - 5, recover + 50) if recover is not None else None,
        "time_to_recover_s": None if recover is None else round(float(stamps[recover] - fault_stamp), 3),
    }
    if first_hold is not None:
        seg = q[max(first_hold - 2, 0): (recover if recover is not None else len(q))]
        if len(seg) >= 3:
            accel = np.abs(np.diff(seg, n=2, axis=0)) / dt ** 2
            figures["braking_accel_ratio"] = round(float((accel / accel_max).max()), 3)
    return figures


# ---- one case ------------------------------------------------------------------------------------

def run_case(case: FaultCase, out_dir: Path, domain_id: int, timeout_s: float = 150.0) -> dict:
    """Run `case` once in ROS domain `domain_id`; its figures (and where its logs are)."""
    from ..graph_runner import run_graph

    out_dir.mkdir(parents=True, exist_ok=True)
    robot = load_robot(ROBOT)
    cfg = robot.config
    stats_file = out_dir / "executor_stats.json"
    stats_file.unlink(missing_ok=True)
    overrides = {"sim_bridge": {"lockstep": "false", "max_steps": str(case.max_steps + 100)},
                 "executor": {"lockstep": "false", "stats_file": str(stats_file)},
                 "evaluator": {"lockstep": "false", "seeds": f"{list(range(SEED, SEED + case.episodes))}",
                               "output_dir": str(out_dir),
                               "record": "false", "max_steps": str(case.max_steps), "episode_timeout_s": "90.0"}}
    for node, params in case.overrides.items():
        overrides.setdefault(node, {}).update(params)
    env = {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    processes: dict = {}
    result: dict = {}
    remaps: dict = {}
    for spec in case.relays.values():
        remaps.setdefault(spec.node, {})[spec.topic] = spec.topic_in
    graph = threading.Thread(target=lambda: result.update(
        run_graph(GRAPH, overrides, out_dir / "logs", timeout_s=timeout_s, env=env, processes=processes,
                  remaps=remaps)))
    observer = Observer(domain_id, cfg.output.command_topic, case.relays)
    ctx = FaultContext(processes, observer)
    injected, error = False, None
    graph.start()
    try:
        ready = observer.wait_moving(case.after_moving, timeout_s - 30) if case.episodes == 1 else \
            observer.wait_results(1, timeout_s - 30)
        if ready:
            injected_wall = time.monotonic()
            ctx.notes["fault_stamp_s"] = observer.last_command_stamp
            case.inject(ctx)
            injected = True
            ctx.notes["inject_s"] = round(time.monotonic() - injected_wall, 3)
        else:
            error = f"the arm never moved ({observer.commands} commands seen, {observer.moving} moving)"
    except Exception as exc:  # noqa: BLE001 - a failed injection is a finding of the case
        error = f"injection failed: {exc}"
    finally:
        graph.join()
        for name, relay in observer.relays.items():
            ctx.notes[f"relay_{name}"] = {"passed": relay.passed, "dropped": relay.dropped}
        observer.close()
    figures = {"case": case.name, "description": case.description, "injected": injected,
               "error": error or result.get("error"),
               "restarts": {n: p["restarts"] for n, p in result.get("processes", {}).items() if p["restarts"]},
               "notes": ctx.notes, "logs": str(out_dir / "logs")}
    report_file = out_dir / "report.json"
    if report_file.is_file():
        episode = json.loads(report_file.read_text())["episodes"][-1]
        figures.update(success=bool(episode["success"]), reason=episode["reason"], steps=episode["steps"])
    if stats_file.is_file() and injected:
        stats = json.loads(stats_file.read_text())
        commands = stats["commands"]
        fault_stamp = ctx.notes["fault_stamp_s"]
        if "clock_jump_s" in ctx.notes:          # figures on one timeline: the jump is not a gap
            commands = undo_clock_jump(commands, ctx.notes["clock_jump_s"], stats["control_dt"])
        if case.episodes > 1:                     # judged on the episode that started after the fault
            fault_stamp = next((stamp for stamp, _ in stats.get("resets", []) if stamp > fault_stamp), fault_stamp)
        commands = episode_commands(commands, stats.get("resets", []), fault_stamp)
        figures.update(command_figures(commands, fault_stamp, cfg.limits, stats["control_dt"]))
        figures["rejections"] = stats.get("rejections", {})
        figures["clock_jumps_back"] = stats["counters"].get("clock_jumps_back", 0)
        figures["gate"] = {k: v for k, v in stats["gate"].items() if v}
    elif injected and not figures["error"]:       # without the command log nothing can be judged: say why
        executor = result.get("processes", {}).get("executor", {})
        figures["error"] = (f"the executor wrote no {stats_file.name} (exit code {executor.get('exit_code')}; "
                            f"see {out_dir / 'logs' / 'executor.log'})")
    return figures


def check_targets(case: FaultCase, figures: dict) -> list[str]:
    """The suite's targets for one case; each failure named."""
    problems = []
    if figures.get("error"):
        problems.append(f"error: {figures['error']}")
    if figures.get("commands_outside_limits", 0):
        problems.append(f"{figures['commands_outside_limits']} commands outside limits")
    killed = figures.get("notes", {}).get("killed")
    crashed = {n: k for n, k in figures.get("restarts", {}).items() if n != killed}
    if crashed:                                       # a node the fault did not kill died by itself
        problems.append(f"restarted without being killed: {crashed}")
    if figures.get("success") is None:
        problems.append("no episode report")
    elif case.expect_success and not figures["success"]:
        problems.append(f"episode did not recover: {figures.get('reason')}")
    ticks = figures.get("hold_after_ticks")
    hold = figures.get("time_to_hold_periods")
    if ticks is not None:
        if ticks > 1:
            problems.append(f"held {ticks} control ticks after the last executed action (> 1)")
    elif hold is not None and hold > 1.0 + 1e-6:
        problems.append(f"held {hold} periods after the last executed action (> 1)")
    braking = figures.get("braking_accel_ratio")
    if braking is not None and braking > 1.0 + 5e-3:     # the log rounds commands to 1e-6 rad
        problems.append(f"braking at {braking} x the acceleration limit")
    # max_gap_periods is reported, not a target: on a loaded 2-core machine the executor process can
    # be descheduled for a few periods whatever the fault (a position controller then keeps the
    # last command).
    return problems


# ---- the whole suite -------------------------------------------------------------------------

def run_suite(out: Path, names: list[str] | None = None, first_domain: int = 80) -> list[dict]:
    rows = []
    for i, case in enumerate(c for c in CASES if names is None or c.name in names):
        figures = run_case(case, out / "faults" / case.name, first_domain + i)
        figures["problems"] = check_targets(case, figures)
        rows.append(figures)
        print(f"faults: {case.name}: {'ok' if not figures['problems'] else figures['problems']}")
    return rows


def soak_markdown(s: dict) -> list[str]:
    """The soak's section of faults.md, from its figures (bench/soak.py run_soak)."""
    lines = ["", f"## Soak: {s['graph']} ({s['robot']}), {s['backend']}, free-running, "
             f"{s['sim_minutes']} sim minutes ({s['wall_minutes']} wall minutes, real-time factor "
             f"{s['real_time_factor']})", "",
             f"{len(s['faults'])} faults at random times (seed {s['seed']}); restarts "
             f"{', '.join(f'{k} x{v}' for k, v in s['restarts'].items()) or 'none'}; {s['episodes']} episodes, "
             f"{s['successes']} successes; {s['chunks']} chunks; commands outside limits: "
             f"{s['commands_outside_limits']}; tracebacks: {s['tracebacks'] or 'none'}; targets: "
             f"{'met' if not s['problems'] else '; '.join(s['problems'])}.", "",
             "| process | pid | measured (s) | RSS MiB start -> end (max) | threads | open fds |",
             "|---|---|---|---|---|---|"]
    for r in s["processes"]:
        if "rss_growth_mb" not in r:
            lines.append(f"| {r['node']} | {r['pid']} | lived {r['lived_s']} s (< warm-up) | - | - | - |")
            continue
        lines.append(f"| {r['node']} | {r['pid']} | {r['measured_s']} | {r['rss_mb_start']} -> {r['rss_mb_end']} "
                     f"({r['rss_mb_max']}) | {r['threads_start']} -> {r['threads_end']} | "
                     f"{r['fds_start']} -> {r['fds_end']} |")
    lines += ["", "| sim window | chunks | inference p50 / p95 (ms) | observation age p50 / p95 (ms) |",
              "|---|---|---|---|"]
    for w in s["latency_windows"]:
        lines.append(f"| {w['window']} | {w['chunks']} | {w['inference_ms_p50']} / {w['inference_ms_p95']} | "
                     f"{w['obs_age_ms_p50']} / {w['obs_age_ms_p95']} |")
    lines += ["", "Faults: " + "; ".join(f"{f['sim_s']:.0f} s {f['kind']}" for f in s["faults"]) + "."]
    return lines


def write_reports(rows: list[dict], out: Path, soak: dict | None = None) -> None:
    """faults.json / faults.md: the cases and the soak (bench/soak.py); the one not given is kept."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "faults.json"
    if soak is None and path.is_file():
        soak = json.loads(path.read_text()).get("soak")
    path.write_text(json.dumps({"graph": GRAPH, "robot": ROBOT, "seed": SEED, "cases": rows, "soak": soak},
                               indent=2))
    header = ("| case | outcome | outside limits | hold (ticks / periods) | braking / accel limit | step / max at fault | "
              "jerk at fault (rad/s³) | recover (s) | longest gap (periods) | restarts | rejections | targets |")
    lines = [f"# Fault injection: {GRAPH} ({ROBOT}), free-running, seed {SEED}", "", header,
             "|" + "---|" * 12]
    for r in rows:
        at = r.get("at_fault") or {}
        outcome = f"{'success' if r.get('success') else 'fail'} ({r.get('reason')}, {r.get('steps')} steps)"
        rejections = ", ".join(f"{k}: {v}" for k, v in (r.get("rejections") or {}).items()) or "-"
        restarts = ", ".join(f"{k} x{v}" for k, v in r.get("restarts", {}).items()) or "-"
        lines.append(f"| {r['case']} | {outcome} | {r.get('commands_outside_limits')} | "
                     f"{r.get('hold_after_ticks')} / {r.get('time_to_hold_periods')} | {r.get('braking_accel_ratio')} | {at.get('max_step_ratio')} | "
                     f"{at.get('max_jerk')} | {r.get('time_to_recover_s')} | {r.get('max_gap_periods')} | {restarts} | "
                     f"{rejections} | "
                     f"{'met' if not r['problems'] else '; '.join(r['problems'])} |")
    if soak is not None:
        lines += soak_markdown(soak)
    (out / "faults.md").write_text("\n".join(lines) + "\n")


def build_argparser(p) -> None:
    p.add_argument("--cases", nargs="+", choices=CASE_NAMES, help="run only these cases")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench"))


def run(args) -> int:
    rows = run_suite(args.out, args.cases)
    write_reports(rows, args.out)
    print(f"bench: wrote {args.out / 'faults.json'} and {args.out / 'faults.md'}")
    return 0 if all(not r["problems"] for r in rows) else 1
