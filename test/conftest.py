import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture
def robots_dir() -> Path:
    return ROOT / "config" / "robots"


def record_episodes(out: Path, domain_id: int, tasks: str, seeds: str, max_steps: int, backend: str = "oracle"):
    """Run the sim_demo graph (one process per node) for a few short episodes recorded under `out`."""
    from vla_policy_node.graph_runner import run_graph

    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    overrides = {"policy": {"backend": backend},
                 # the scripted expert's own chunks, as `make data` records them (no ensembling)
                 "executor": {"merge": "replace" if backend == "oracle" else ""},
                 "evaluator": {"tasks": tasks, "seeds": seeds, "max_steps": str(max_steps), "output_dir": str(out),
                               "episode_timeout_s": "90.0"}}
    result = run_graph("sim_demo", overrides, out / "logs", timeout_s=180)
    assert result["error"] is None, result["error"]
    return result


def stop_peer(executor, node, context, proc, log) -> None:
    """Tear down a test's rclpy peer and the node process it talked to."""
    import subprocess

    executor.shutdown()
    node.destroy_node()
    context.try_shutdown()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
