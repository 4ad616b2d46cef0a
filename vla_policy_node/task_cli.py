"""vla-task: run one task on a running graph from a terminal (a client of the RunTask action).

    vla-task "reach the target" --arm              # a physical arm (or any graph with a task_runner)
    vla-task --task reach --seed 100 --arm          # an embedded simulator: reset it to a task and seed

Prints the feedback as the task runs; Ctrl-C cancels the task (the arm holds) and waits for its
result. Exit code: 0 success (or an end without a success signal, as on a physical arm: the
reason is printed), 1 the task ended otherwise, 2 no task runner answered or the goal was refused.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

ACTION_NAME = "vla/run_task"            # relative: under --namespace


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vla-task", description=__doc__.splitlines()[0])
    parser.add_argument("instruction", nargs="?", default="", help="what to do (optional with --task)")
    parser.add_argument("--task", default="", help="embedded simulators: the task to reset the simulator to")
    parser.add_argument("--seed", type=int, default=0, help="with --task: the simulator's seed")
    parser.add_argument("--arm", action="store_true", help="arm the executor once the graph is reset")
    parser.add_argument("--timeout", type=float, default=0.0, help="wall-clock limit in s (0: the runner's default)")
    parser.add_argument("--max-steps", type=int, default=0, help="executed control steps before step_limit (0: none)")
    parser.add_argument("--episode-id", default="", help="episode id (default: a new one)")
    parser.add_argument("--server-timeout", type=float, default=15.0,
                        help="seconds to wait for a task runner")
    parser.add_argument("--namespace", default="", help="the graph's namespace (robots side by side)")
    parser.add_argument("--quiet", action="store_true", help="print only the result")
    args = parser.parse_args(argv)
    if not args.instruction and not args.task:
        parser.error("give an instruction, or --task on an embedded simulator")
    return args


def run(args: argparse.Namespace, out=sys.stdout) -> int:
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from vla_msgs.action import RunTask

    # Ctrl-C (and SIGTERM) must cancel the goal, which needs the context alive: rclpy's own handler
    # would shut it down, and a process started in the background by a script inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("vla_task", context=context, namespace="/" + args.namespace.strip("/"))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = ActionClient(node, RunTask, ACTION_NAME)
    where = node.resolve_topic_name(ACTION_NAME)
    try:
        if not client.wait_for_server(timeout_sec=args.server_timeout):
            print(f"vla-task: no task runner serves {where} (waited {args.server_timeout:.0f} s); start a "
                  "graph with one, e.g. `vla-graph robot_bringup`", file=sys.stderr)
            return 2

        def on_feedback(msg) -> None:
            if args.quiet:
                return
            f = msg.feedback
            hold = f" holding ({f.hold_reason})" if f.holding and f.hold_reason else ""
            print(f"[{f.episode_id}] {f.phase}: {f.chunks} chunks, {f.executed_steps} steps, "
                  f"last chunk {f.last_latency_ms:.0f} ms{hold}", file=out, flush=True)

        goal = RunTask.Goal(instruction=args.instruction, task=args.task, seed=args.seed, arm=args.arm,
                            timeout_s=args.timeout, max_steps=args.max_steps, episode_id=args.episode_id)
        handle = wait_future(client.send_goal_async(goal, feedback_callback=on_feedback), args.server_timeout)
        if handle is None or not handle.accepted:
            print(f"vla-task: {where} refused the goal (see the task_runner's log)", file=sys.stderr)
            return 2
        result_future = handle.get_result_async()
        try:
            while not result_future.done():
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("vla-task: canceling the task (the arm holds)", file=sys.stderr)
            handle.cancel_goal_async()
            wait_future(result_future, 30.0)
        if not result_future.done():
            print("vla-task: no result from the task runner", file=sys.stderr)
            return 1
        result = result_future.result().result
        if result.reason.startswith("error"):
            print(f"vla-task: {result.reason}", file=sys.stderr)
            return 1
        known = f"success={str(result.success).lower()}" if result.success_known else "success=unknown"
        print(f"vla-task: {result.episode_id}: {result.reason}, {known}, {result.steps} steps, "
              f"{result.duration_s:.1f} s graph time, {result.wall_time_s:.1f} s wall", file=out, flush=True)
        if result.success or (not result.success_known and result.reason in ("step_limit", "timeout")):
            return 0
        return 1
    finally:
        executor.shutdown()
        spinner.join(timeout=5.0)
        client.destroy()
        node.destroy_node()
        context.try_shutdown()


def wait_future(future, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    return future.result() if future.done() else None


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
