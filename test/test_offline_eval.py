"""`vla-eval offline` on bags written directly with rosbags (sqlite3 and mcap, another writer's topic
names and message types), scored with the shipped checkpoint; damaged and incomplete bags are
listed, never tracebacks."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from vla_policy_node.core.embodiment import load_robot
from vla_policy_node.data.dataset import load_episode
from vla_policy_node.evaluation.cli import main as vla_eval

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "videovla_metaworld"
TASK, SEED, STEPS = "button-press", 100, 24          # a seed the checkpoint never saw
TOPIC_MAP = {"/vla/sim/camera/corner/image_raw": "/cam/front", "/joint_states": "/arm/joints",
             "/vla/sim/ee_pose": "/arm/pose", "/vla/sim/command": "/arm/cmd", "/vla/sim/success": "/arm/done"}
ARM_COMMAND = "float64[] values\nstd_msgs/Header header\nstring[] names\n"   # a custom type of the other writer


@pytest.fixture(scope="module")
def sim_episode():
    """A real short MetaWorld episode: scripted expert, rendered frames, hand pose, fingers."""
    from metaworld.policies import ENV_POLICY_MAP

    from vla_policy_node.sim.metaworld_sim import MetaWorldSim, default_instruction

    sim = MetaWorldSim(["corner2"], width=128, height=128)
    step = sim.reset(TASK, SEED)
    expert = ENV_POLICY_MAP[f"{TASK}-v3"]()
    rows = []
    for _ in range(STEPS):
        names, position, _ = sim.joint_state()
        xyz, quat = sim.ee_pose()
        action = np.clip(expert.get_action(step.env_state), -1.0, 1.0)
        rows.append({"frame": sim.render()["corner2"], "joints": (names, position), "pose": (xyz, quat),
                     "action": action, "success": step.success})
        step = sim.step(action)
    sim.close()
    return rows, default_instruction(TASK)


def _typestore():
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(ARM_COMMAND, "acme_msgs/msg/ArmCommand"))
    return store


def write_bag(path: Path, rows, storage: str, encoding: str = "bgr8", drop: tuple = (),
              declare_types: bool = True) -> None:
    """The episode as another tool records it: its own topic names, a bgr8 camera, a custom command
    type (whose definition is stored in the bag unless declare_types is False)."""
    ts = _typestore()
    T = ts.types
    dt_ns = 12_500_000

    def header(t):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
                                        frame_id="world")

    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    writer = Writer(path, version=9, storage_plugin=plugin)
    writer.open()
    conns = {}

    def put(topic, msgtype, t, msg):
        if topic in drop:
            return
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=ts) if declare_types or \
                msgtype.startswith(("sensor_msgs", "geometry_msgs", "std_msgs")) else \
                writer.add_connection(topic, msgtype, msgdef="", rihs01="RIHS01_" + "0" * 64)
        writer.write(conns[topic], t, ts.serialize_cdr(msg, msgtype))

    for k, row in enumerate(rows):
        t = 2 * 10**9 + k * dt_ns
        pixels = row["frame"][:, :, ::-1] if encoding == "bgr8" else row["frame"]
        put("/cam/front", "sensor_msgs/msg/Image", t, T["sensor_msgs/msg/Image"](
            header=header(t), height=128, width=128, encoding=encoding, is_bigendian=0, step=384,
            data=np.ascontiguousarray(pixels).reshape(-1)))
        names, position = row["joints"]
        put("/arm/joints", "sensor_msgs/msg/JointState", t, T["sensor_msgs/msg/JointState"](
            header=header(t), name=list(names), position=np.asarray(position, np.float64),
            velocity=np.zeros(0), effort=np.zeros(0)))
        xyz, quat = row["pose"]
        put("/arm/pose", "geometry_msgs/msg/PoseStamped", t, T["geometry_msgs/msg/PoseStamped"](
            header=header(t), pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=xyz[0], y=xyz[1], z=xyz[2]),
                orientation=T["geometry_msgs/msg/Quaternion"](x=quat[0], y=quat[1], z=quat[2], w=quat[3]))))
        put("/arm/cmd", "acme_msgs/msg/ArmCommand", t + 300_000, T["acme_msgs/msg/ArmCommand"](
            values=np.asarray(row["action"], np.float64), header=header(t), names=["dx", "dy", "dz", "gripper"]))
        put("/arm/done", "std_msgs/msg/Bool", t + 400_000, T["std_msgs/msg/Bool"](data=bool(row["success"])))
    writer.close()


@pytest.fixture(scope="module")
def bags(sim_episode, tmp_path_factory):
    rows, _ = sim_episode
    root = tmp_path_factory.mktemp("offline")
    made = {"sqlite": root / f"{TASK}_s{SEED}", "mcap": root / f"{TASK}_s{SEED + 1}"}
    write_bag(made["sqlite"], rows, "sqlite3")
    write_bag(made["mcap"], rows, "mcap")
    for name, storage, suffix in (("sqlite_truncated", "sqlite", ".db3"), ("mcap_truncated", "mcap", ".mcap")):
        made[name] = root / name
        shutil.copytree(made[storage], made[name])
        data_file = next(made[name].glob(f"*{suffix}"))
        os.truncate(data_file, data_file.stat().st_size // 3)
    made["no_camera"] = root / "no_camera"
    write_bag(made["no_camera"], rows[:4], "mcap", drop=("/cam/front",))
    made["undeclared"] = root / "undeclared"
    write_bag(made["undeclared"], rows[:4], "sqlite3", declare_types=False)
    made["yuv"] = root / "yuv"
    write_bag(made["yuv"], rows[:4], "sqlite3", encoding="yuv422")
    (root / "topics.yaml").write_text("".join(f"{k}: {v}\n" for k, v in TOPIC_MAP.items()))
    return root, made


@pytest.fixture(scope="module")
def offline_run(bags, sim_episode):
    """One `vla-eval offline` run over good and bad bags (in this process: the imports are shared)."""
    root, made = bags
    _, instruction = sim_episode
    out = root / "report"
    order = ["sqlite", "sqlite_truncated", "mcap", "mcap_truncated", "no_camera", "undeclared", "yuv"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = vla_eval(["offline", "--bag", *[str(made[n]) for n in order], "--checkpoint", str(CHECKPOINT),
                         "--robot", "metaworld_sawyer", "--topic-map", str(root / "topics.yaml"),
                         "--instruction", instruction, "--steps", "2", "--batch", "16", "--output", str(out)])
    return subprocess.CompletedProcess([], code, stdout.getvalue(), stderr.getvalue()), out, made


def test_console_command_is_installed():
    exe = Path(sys.executable).parent / "vla-eval"
    proc = subprocess.run([str(exe), "offline", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--topic-map" in proc.stdout and "--steps" in proc.stdout


def test_sqlite_and_mcap_bags_of_another_writer_load_identically(bags, sim_episode):
    _, made = bags
    rows, _ = sim_episode
    robot = load_robot("metaworld_sawyer")
    a = load_episode(made["sqlite"], robot, TOPIC_MAP)
    b = load_episode(made["mcap"], robot, TOPIC_MAP)
    assert len(a) == len(b) == STEPS
    np.testing.assert_array_equal(a.frames["corner"], np.stack([r["frame"] for r in rows]))   # bgr8 -> rgb
    np.testing.assert_array_equal(a.frames["corner"], b.frames["corner"])
    np.testing.assert_allclose(a.actions, np.stack([r["action"] for r in rows]), rtol=1e-6)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.states, b.states)
    assert a.duration_s == pytest.approx((STEPS - 1) * 0.0125 + 400e-6)


def test_offline_eval_scores_the_policy_on_both_storages(offline_run, sim_episode):
    proc, out, made = offline_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "offline: episodes=2 skipped=5" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert [e["bag"] for e in report["episodes"]] == [str(made["sqlite"]), str(made["mcap"])]
    off = report["offline"]
    assert off["speed"]["episodes"] == 2 and off["speed"]["chunks"] == 6 and off["speed"]["denoising_steps"] == 2
    for row in report["episodes"]:
        assert row["steps"] == STEPS and row["chunks"] == 3 and row["task"] == TASK
        assert row["instruction"] == sim_episode[1]
        assert len(row["action_error_per_step"]) == 8
    # a trained policy on its own task: far better than commanding nothing, imagination close to reality
    targets = np.stack([r["action"] for r in sim_episode[0]])
    assert off["actions"]["l1"] < 0.6 * np.abs(targets).mean()
    assert set(off["actions"]["per_dim"]) == {"dx", "dy", "dz", "gripper"}
    assert off["actions"]["count"] == 2 * STEPS
    # imagined frames are scored only where the recording reaches them (chunks start at 0, 8, 16)
    offsets = json.loads((CHECKPOINT / "config.json").read_text())["policy"]["future_offsets"]
    for offset in offsets:
        n = 2 * sum(1 for k in range(0, STEPS, 8) if k + offset < STEPS)
        frames = off["frames"].get(str(offset))
        if n == 0:
            assert frames is None or frames["n"] == 0
            continue
        assert frames["n"] == n and frames["psnr"] > 20.0 and frames["ssim"] > 0.8
    assert any(k + o < STEPS for k in range(0, STEPS, 8) for o in offsets)     # something was scored
    md = (out / "report.md").read_text()
    assert "## Imagined frames vs recorded frames (64x64)" in md and "No perceptual metric" in md
    assert (out / "videos" / f"{TASK}_s{SEED}.mp4").is_file()


def test_report_numbers_match_the_model_run_directly(offline_run, sim_episode):
    """Recompute the two episodes' chunks with the backend's batched predict (same seed, same batch)."""
    from vla_policy_node.evaluation.offline import OpenLoopEvaluator
    from vla_policy_node.models.registry import make_backend

    proc, out, made = offline_run
    assert proc.returncode == 0, proc.stderr
    robot = load_robot("metaworld_sawyer")
    episodes = [load_episode(made[n], robot, TOPIC_MAP) for n in ("sqlite", "mcap")]
    for e in episodes:
        e.instruction = sim_episode[1]              # these bags record none; the run was given it
    policy = make_backend("videovla", robot, checkpoint=str(CHECKPOINT), num_inference_steps=2)
    queries = [(e, k) for e in episodes for k in (0, 8, 16)]
    policy.set_decode_imagined(True)
    policy.reset("", seed=0)
    outs = policy.predict_batch([OpenLoopEvaluator.observation(e, k) for e, k in queries])
    assert outs[0].imagined_frames["corner"].shape == (len(policy.future_offsets), 64, 64, 3)
    assert outs[0].actions.shape == (8, 4)
    report = json.loads((out / "report.json").read_text())
    for i, (row, ep) in enumerate(zip(report["episodes"], episodes)):
        pred = np.stack([o.actions for o in outs[3 * i: 3 * i + 3]])
        target = np.stack([ep.actions[k: k + 8] for k in (0, 8, 16)])
        assert row["action_l1"] == pytest.approx(np.abs(pred - target).mean(), rel=1e-4)
    # the batched path is the single-observation path: one observation, same seed -> same chunk
    observation = OpenLoopEvaluator.observation(episodes[0], 8)
    policy.set_decode_imagined(False)
    policy.reset(sim_episode[1], seed=3)
    single = policy.predict(observation)
    policy.reset(sim_episode[1], seed=3)
    batched = policy.predict_batch([observation])[0]
    np.testing.assert_allclose(batched.actions, single.actions, atol=1e-5)
    assert batched.imagined_frames is None and single.imagined_frames is None


def test_damaged_and_incomplete_bags_are_listed_with_the_reason(offline_run):
    proc, out, made = offline_run
    report = json.loads((out / "report.json").read_text())
    reasons = {Path(s["bag"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"sqlite_truncated", "mcap_truncated", "no_camera", "undeclared", "yuv"}
    assert "not a readable rosbag2 folder" in reasons["sqlite_truncated"] and "malformed" in reasons["sqlite_truncated"]
    assert "not a readable rosbag2 folder" in reasons["mcap_truncated"]
    assert "missing topic(s) /cam/front (camera 'corner')" in reasons["no_camera"]
    assert "/cam/front" in reasons["yuv"] and "encoding 'yuv422' not supported" in reasons["yuv"]
    assert "topic /arm/cmd (command): message type 'acme_msgs/msg/ArmCommand' unknown" in reasons["undeclared"]
    md = (out / "report.md").read_text()
    assert "## Skipped inputs" in md and "yuv422" in md
    for name in reasons:
        assert f"vla-eval: skipped {made[name]}" in proc.stderr


def test_a_missing_topic_is_named_and_nothing_is_evaluated(bags, capsys, tmp_path):
    root, made = bags
    code = vla_eval(["offline", "--bag", str(made["no_camera"]), "--checkpoint", str(CHECKPOINT),
                     "--robot", "metaworld_sawyer", "--topic-map", str(root / "topics.yaml"),
                     "--output", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1
    assert "missing topic(s) /cam/front (camera 'corner')" in err and str(made["no_camera"]) in err
    assert "no episode could be evaluated" in err and "Traceback" not in err
    # without the topic map, every robot-file topic the bag lacks is named
    code = vla_eval(["offline", "--bag", str(made["sqlite"]), "--checkpoint", str(CHECKPOINT),
                     "--robot", "metaworld_sawyer", "--output", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 1
    assert "/vla/sim/camera/corner/image_raw (camera 'corner')" in err and "/vla/sim/command (command)" in err
    bad_map = tmp_path / "bad.yaml"
    bad_map.write_text("- just\n- a list\n")
    assert vla_eval(["offline", "--bag", str(made["sqlite"]), "--checkpoint", str(CHECKPOINT), "--robot",
                     "metaworld_sawyer", "--topic-map", str(bad_map)]) == 2
    assert "bad.yaml: a topic map is a mapping" in capsys.readouterr().err


def test_actions_only_gives_the_same_chunks_without_imagination(bags, offline_run, sim_episode, tmp_path):
    root, made = bags
    _, full_out, _ = offline_run
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = vla_eval(["offline", "--bag", str(made["sqlite"]), str(made["mcap"]), "--checkpoint", str(CHECKPOINT),
                         "--robot", "metaworld_sawyer", "--topic-map", str(root / "topics.yaml"),
                         "--instruction", sim_episode[1], "--steps", "2", "--batch", "16", "--actions-only",
                         "--output", str(tmp_path / "actions_only"), "--index-dir", str(root / "runs_index")])
    assert code == 0 and "psnr" not in stdout.getvalue()
    fast = json.loads((tmp_path / "actions_only" / "report.json").read_text())
    full = json.loads((full_out / "report.json").read_text())
    assert fast["offline"]["frames"] == {} and fast["episodes"][0]["divergence"]["n"] == 0
    # same seed, same batches: the same chunks, so the same action errors
    assert fast["offline"]["actions"]["l1"] == pytest.approx(full["offline"]["actions"]["l1"], rel=1e-5)
    assert "neither decoded nor scored (--actions-only)" in (tmp_path / "actions_only" / "report.md").read_text()
    rows = json.loads((root / "runs_index" / "index.json").read_text())["runs"]
    assert [Path(r["run"]).name for r in rows] == ["report", "actions_only"]
    furthest = max(o for o in json.loads((CHECKPOINT / "config.json").read_text())["policy"]["future_offsets"]
                   if o < STEPS)                 # the furthest offset a 24-step recording reaches
    assert f"imagined_psnr_db@{furthest}" in rows[0] and not any("psnr" in k for k in rows[1])
