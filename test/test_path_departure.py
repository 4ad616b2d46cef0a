"""scripts/path_departure.py on bags written here: a failed episode whose hand follows the expert for
a while and then turns away is found leaving the expert's path at the step it does, and as far as it
gets; successful episodes are skipped."""

import importlib.util
import json

import numpy as np
from conftest import ROOT, BagWriter


def load_script():
    spec = importlib.util.spec_from_file_location("path_departure", ROOT / "scripts" / "path_departure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(run, episodes: dict) -> None:
    """An evaluator-like output folder: report.json and one bag of hand poses per episode."""
    (run / "bags").mkdir(parents=True)
    report = []
    for name, (success, path) in episodes.items():
        task, seed = name.rsplit("_s", 1)
        report.append({"task": task, "seed": int(seed), "success": success})
        bag = BagWriter(run / "bags" / name)
        T = bag.types
        for i, (x, y, z) in enumerate(path):
            t = (i + 1) * 20_000_000
            pose = T["geometry_msgs/msg/PoseStamped"](header=bag.header(t), pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z)),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
            bag.put("/vla/sim/ee_pose", "geometry_msgs/msg/PoseStamped", t, pose)
        bag.close()
    (run / "report.json").write_text(json.dumps({"episodes": report}))


def test_a_failure_is_found_leaving_the_expert_path_where_it_turns_away(tmp_path):
    steps = np.arange(40)
    expert = np.stack([0.01 * steps, np.zeros(40), np.full(40, 0.2)], axis=1)        # 1 cm a step along x
    policy = expert.copy()
    policy[20:, 1] = 0.02 * (steps[20:] - 19)                                          # from step 20, 2 cm a step in y
    write_run(tmp_path / "oracle", {"reach_s200": (True, expert), "reach_s201": (True, expert)})
    write_run(tmp_path / "policy", {"reach_s200": (False, policy), "reach_s201": (True, expert)})
    rows = load_script().departures(tmp_path / "oracle", tmp_path / "policy", tolerance=0.05)
    assert [r["episode"] for r in rows] == ["reach_s200"]                               # the success is skipped
    assert rows[0]["first_step_off"] == 22                       # y = 0.06 m there, the first past 5 cm
    assert rows[0]["max_distance_m"] == 0.4                       # y at the last step, 20 steps of 2 cm
