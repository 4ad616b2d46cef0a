"""Imagination monitor: the core on real rendered MetaWorld frames, the node across processes over
DDS, the robot file's `monitor:` section, and a closed-loop run whose report carries the figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml

from vla_policy_node.core.embodiment import EmbodimentConfigError, load_embodiment
from vla_policy_node.core.imagination_monitor import ImaginationMonitor, MonitorSettings
from vla_policy_node.core.monitor_figures import monitor_figures
from conftest import stop_peer

DOMAIN_ID = 71
DT = 1.0 / 80.0                    # metaworld_sawyer control period
VIEWS = {"corner": ((128, 128), None)}


def imagined_from(frame: np.ndarray) -> np.ndarray:
    """What a 64x64 world model would show for `frame` if it imagined it perfectly."""
    return cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def frames():
    """Real rendered frames: the drawer scene at reset, and after the hand moved 15 cm."""
    from vla_policy_node.sim.metaworld_sim import MetaWorldSim
    sim = MetaWorldSim(["corner2"], 128, 128)
    try:
        sim.reset("drawer-open", 101)
        start = sim.render()["corner2"]
        for _ in range(15):
            sim.step([0.0, 1.0, 0.0, 0.0])
        moved = sim.render()["corner2"]
    finally:
        sim.close()
    assert start.shape == (128, 128, 3) and np.abs(start.astype(int) - moved).mean() > 0.5
    return start, moved


def monitor(threshold=0.1, action="hold", **kw) -> ImaginationMonitor:
    return ImaginationMonitor(MonitorSettings(threshold, action, "", 0.5 * DT, **kw), VIEWS)


# ---- core ---------------------------------------------------------------------------------------

def test_identical_imagined_and_real_frames_have_zero_divergence(frames):
    start, _ = frames
    m = monitor()
    assert m.add_imagined(1, "ep", 2.0, ["corner"], [imagined_from(start)], [4 * DT]) == []
    (r,) = m.on_real_frame("corner", 2.0 + 4 * DT, start)       # real 128x128, resized to 64x64
    assert r.divergence == pytest.approx(0.0, abs=1e-12) and r.ssim == pytest.approx(1.0)
    assert math.isinf(r.psnr)
    assert (r.exceeded, r.action, r.width, r.height) == (False, "none", 64, 64)
    assert (r.chunk_id, r.episode_id, r.frame_index, r.offset_s) == (1, "ep", 0, pytest.approx(4 * DT))
    assert m.pending == 0 and m.counts["compared"] == 1


@pytest.mark.parametrize("corrupt", ["noise", "shift"])
def test_noised_or_shifted_real_frame_exceeds_with_the_configured_action(frames, corrupt):
    start, _ = frames
    if corrupt == "noise":
        real = np.clip(start + np.random.default_rng(0).normal(0, 25, start.shape), 0, 255).astype(np.uint8)
    else:
        real = np.roll(start, 8, axis=1)
    m = monitor(threshold=0.1, action="hold")
    m.add_imagined(7, "ep", 0.0, ["corner"], [imagined_from(start)], [DT])
    (r,) = m.on_real_frame("corner", DT, real)
    assert r.divergence > 0.3 and r.psnr < 27.0
    assert r.exceeded and r.action == "hold" and r.threshold == 0.1


def test_real_motion_scores_between_identical_and_corrupted(frames):
    """The hand 15 cm from where it was imagined: a real mismatch, flagged at a low threshold."""
    start, moved = frames
    for threshold, action, exceeded in ((0.05, "replan", True), (0.5, "replan", False)):
        m = monitor(threshold=threshold, action=action)
        m.add_imagined(1, "ep", 0.0, ["corner"], [imagined_from(start)], [DT])
        (r,) = m.on_real_frame("corner", DT, moved)
        assert 0.03 < r.divergence < 0.3
        assert r.exceeded is exceeded and r.action == (action if exceeded else "none")


def test_timing_match_within_half_a_control_period(frames):
    start, _ = frames
    img, t = imagined_from(start), 1.0 + 8 * DT
    for offset, matched in ((0.0, True), (0.49 * DT, True), (-0.49 * DT, True), (0.51 * DT, False)):
        m = monitor()
        m.add_imagined(1, "ep", 1.0, ["corner"], [img], [8 * DT])
        out = m.on_real_frame("corner", t + offset, start)
        assert bool(out) is matched, offset
        if matched:
            assert out[0].time_error_s == pytest.approx(offset, abs=1e-9)
        else:
            assert m.pending == 0 and m.counts["expired"] == 1     # its time passed without a frame
    m = monitor()
    m.add_imagined(1, "ep", 1.0, ["corner"], [img], [8 * DT])
    assert m.on_real_frame("corner", t - 0.51 * DT, start) == [] and m.pending == 1   # still to come


def test_horizon_major_frames_and_late_imagination(frames):
    """Two cameras, two horizon steps; real frames seen before the imagination arrives are used."""
    start, moved = frames
    m = ImaginationMonitor(MonitorSettings(0.1, "replan", "corner", 0.5 * DT), VIEWS)
    for k in range(10):
        m.on_real_frame("corner", 3.0 + k * DT, start if k < 8 else moved)
    late = m.add_imagined(5, "ep", 3.0, ["corner", "wrist"],
                          [imagined_from(start), np.zeros((64, 64, 3), np.uint8),
                           imagined_from(start), np.zeros((64, 64, 3), np.uint8)], [4 * DT, 8 * DT])
    assert [(r.frame_index, r.camera) for r in late] == [(0, "corner"), (1, "corner")]   # wrist not monitored
    assert late[0].divergence == pytest.approx(0.0, abs=1e-12)
    assert late[1].real_stamp_s == pytest.approx(3.0 + 8 * DT) and late[1].divergence > 0.03


def test_clock_restart_and_other_episodes_are_forgotten(frames):
    start, _ = frames
    m = monitor()
    m.on_real_frame("corner", 5.0, start)
    m.on_real_frame("corner", 0.0, start)                    # time went back: a new episode
    assert m.add_imagined(1, "ep2", 4.9, ["corner"], [imagined_from(start)], [0.1]) == []
    m.add_imagined(2, "ep3", 0.5, ["corner"], [imagined_from(start)], [0.1])
    m.drop_other_episodes("ep3")
    assert m.pending == 1 and m.on_real_frame("corner", 0.6, start)[0].episode_id == "ep3"


def test_settings_and_message_shape_errors_name_the_field():
    with pytest.raises(ValueError, match="monitor action 'stop'"):
        MonitorSettings(0.1, "stop")
    with pytest.raises(ValueError, match="threshold must be > 0"):
        MonitorSettings(0.0)
    m = monitor()
    with pytest.raises(ValueError, match="'frame_offsets' has 1 entries for 2 frames"):
        m.add_imagined(3, "ep", 0.0, ["corner"], [np.zeros((8, 8, 3), np.uint8)] * 2, [0.05])


@pytest.mark.parametrize("section,error", [
    ({"threshold": 0.08, "action": "hold", "camera": "corner"}, None),
    ({"threshold": 0.08, "action": "stop"}, "monitor.action: Input should be 'none', 'replan' or 'hold'"),
    ({"threshold": 0.08, "camera": "wrist"}, "monitor.camera: 'wrist' is not one of cameras ['corner']"),
    ({"threshold": 0.0}, "monitor.threshold: Input should be greater than 0"),
    ({"action": "hold"}, "monitor.threshold: Field required"),
])
def test_robot_file_monitor_section(tmp_path, robots_dir, section, error):
    raw = yaml.safe_load((robots_dir / "metaworld_sawyer.yaml").read_text())
    raw["monitor"] = section
    path = tmp_path / "arm.yaml"
    path.write_text(yaml.safe_dump(raw))
    if error is None:
        assert load_embodiment(path).config.monitor.action == "hold"
    else:
        with pytest.raises(EmbodimentConfigError) as exc:
            load_embodiment(path)
        assert str(exc.value) == f"{path}: {error}"


def test_shipped_robot_has_a_monitor_section(robots_dir):
    cfg = load_embodiment(robots_dir / "metaworld_sawyer.yaml").config.monitor
    assert cfg.camera == "corner" and cfg.action in ("replan", "hold") and 0 < cfg.threshold < 1


def test_monitor_figures_auroc_and_correlation():
    rows = [{"success": True, "divergence": [0.04, 0.05], "times": [0.1, 0.2], "psnr": [31.0, 30.0],
             "ssim": [0.96, 0.95]},
            {"success": True, "divergence": [0.05, 0.06], "times": [0.1, 0.2], "psnr": [30.0, math.inf],
             "ssim": [0.95, 0.94]},
            {"success": False, "divergence": [0.03, 0.20], "times": [0.1, 0.3], "psnr": [25.0, 20.0],
             "ssim": [0.93, 0.80]},                                  # diverges only after 0.2 s
            {"success": False, "divergence": [], "times": [], "psnr": [], "ssim": []}]   # nothing compared
    f = monitor_figures(rows)
    assert (f["episodes"], f["failures"], f["compared_frames"]) == (3, 1, 6)
    assert f["failure_auroc"] == {"max_divergence": 1.0, "mean_divergence": 1.0}
    assert f["failure_auroc_common_window"] == {"window_s": 0.2, "episodes": 3, "left_out": 0,
                                                "max_divergence": 0.0, "mean_divergence": 0.0}
    assert f["quality_success_correlation"]["psnr_db"]["pearson"] > 0.9      # inf PSNR left out of the mean
    assert f["mean_divergence_failed"] == pytest.approx(0.115)
    # a fixed early window: an episode with no imagined frame inside it is left out, counted
    late = rows[:3] + [{"success": False, "divergence": [0.5], "times": [1.2], "psnr": [20.0], "ssim": [0.5]}]
    early = monitor_figures(late, window_s=1.0)["failure_auroc_common_window"]
    assert (early["episodes"], early["left_out"]) == (3, 1)
    assert early["max_divergence"] == pytest.approx(1.0)                   # 0.20 > 0.06, 0.05 within 1 s


# ---- node, across processes ---------------------------------------------------------------------

@pytest.fixture
def ros_domain(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return dict(os.environ)


def test_node_publishes_divergence_across_processes(frames, ros_domain, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from diagnostic_msgs.msg import DiagnosticArray
    from vla_msgs.msg import ActionChunk, ImaginationDivergence, ImaginedFuture

    from vla_policy_node.nodes.common import RELIABLE_QOS, SENSOR_QOS, TOPICS, image_msg, to_stamp

    start, moved = frames
    exe = os.path.join(sys.prefix, "bin", "vla_imagination_monitor")
    log = open(tmp_path / "monitor.log", "w")
    proc = subprocess.Popen([exe, "--ros-args", "-p", "threshold:=0.05", "-p", "action:=hold"],
                            env=ros_domain, stdout=log, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("monitor_test_peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        got = []
        node.create_subscription(ImaginationDivergence, TOPICS["divergence"], got.append, RELIABLE_QOS)
        health = []
        node.create_subscription(DiagnosticArray, "/diagnostics", health.append, 10)
        chunk_pub = node.create_publisher(ActionChunk, TOPICS["action_chunk"], RELIABLE_QOS)
        imagined_pub = node.create_publisher(ImaginedFuture, TOPICS["imagined"], RELIABLE_QOS)
        camera_pub = node.create_publisher(Image, "/vla/sim/camera/corner/image_raw", SENSOR_QOS)

        def spin_until(predicate, timeout_s):
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not predicate():
                assert proc.poll() is None, (tmp_path / "monitor.log").read_text()
                executor.spin_once(timeout_sec=0.05)
            return predicate()

        pubs = (chunk_pub, imagined_pub, camera_pub)
        assert spin_until(lambda: all(p.get_subscription_count() for p in pubs) and
                          node.count_publishers(TOPICS["divergence"]), 30.0), "monitor node not discovered"
        t0 = 42.0
        chunk = ActionChunk(chunk_id=9, episode_id="drawer-open_s101", dt=DT)
        chunk.header.stamp = to_stamp(t0)
        chunk_pub.publish(chunk)
        # the imagined future is published once the monitor has taken the chunk (its episode, on
        # /diagnostics): the two topics are not ordered, and an unknown chunk counts as the current episode
        assert spin_until(lambda: any(kv.key == "episode_id" and kv.value == "drawer-open_s101"
                                      for array in health for status in array.status for kv in status.values),
                          20.0), "the monitor did not take the chunk"
        # Frame 0 imagined exactly; frame 1 imagines the reset scene where the hand has moved.
        imagined = ImaginedFuture(chunk_id=9, camera_names=["corner"], frame_offsets=[4 * DT, 8 * DT])
        imagined.header.stamp = to_stamp(t0)
        imagined.frames = [image_msg(imagined_from(start), to_stamp(t0), "camera_corner"),
                           image_msg(imagined_from(start), to_stamp(t0), "camera_corner")]
        imagined_pub.publish(imagined)
        real = {t0 + 4 * DT: start, t0 + 8 * DT: moved}

        def publish_real():
            for t, frame in real.items():
                camera_pub.publish(image_msg(frame, to_stamp(t), "camera_corner"))

        deadline = time.monotonic() + 20.0
        while len(got) < 2 and time.monotonic() < deadline:
            publish_real()                         # best effort: repeated until both were compared
            spin_until(lambda: len(got) >= 2, 0.2)
        assert len(got) == 2, (tmp_path / "monitor.log").read_text()
        same, off = sorted(got, key=lambda m: m.frame_index)
        for msg, k in ((same, 0), (off, 1)):
            assert (msg.episode_id, msg.chunk_id, msg.camera_name, msg.frame_index) == ("drawer-open_s101", 9,
                                                                                       "corner", k)
            assert msg.horizon_offset_s == pytest.approx((4 + 4 * k) * DT)
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            assert stamp == pytest.approx(t0 + (4 + 4 * k) * DT, abs=1e-6)
            assert (msg.width, msg.height, msg.threshold) == (64, 64, pytest.approx(0.05))
        assert same.divergence == pytest.approx(0.0, abs=1e-6) and math.isinf(same.psnr)
        assert (same.exceeded, same.action) == (False, "none")
        assert off.divergence > 0.05 and off.ssim == pytest.approx(1.0 - off.divergence, abs=1e-6)
        assert (off.exceeded, off.action) == (True, "hold")
    finally:
        stop_peer(executor, node, context, proc, log)


# ---- closed loop ------------------------------------------------------------------------------

@pytest.mark.slow      # two learned-policy episodes through the full graph
def test_closed_loop_report_has_monitor_figures(tmp_path):
    """Two short VideoVLA episodes through the full graph: the monitor scores every imagined frame
    that met a real one, and report.json carries the divergence series and the run figures."""
    from conftest import record_episodes

    out = tmp_path / "closed_loop"
    record_episodes(out, DOMAIN_ID + 1, "[plate-slide]", "[100,101]", 58, backend="videovla")
    report = json.loads((out / "report.json").read_text())
    assert report["policy"]["backend"] == "videovla"
    assert set(report["protocol"]["lockstep_of_nodes"]) == {"sim_bridge", "executor"}
    mon = report["summary"]["monitor"]
    assert mon["episodes"] == 2 and mon["compared_frames"] >= 40
    assert 20.0 < mon["mean_psnr_db"] < 45.0 and 0.8 < mon["mean_ssim"] <= 1.0
    # the run figures are the per-episode series' figures: recomputed here from report.json
    from vla_policy_node.core.metrics import auroc
    failed = [int(not ep["success"]) for ep in report["episodes"]]
    series = [[v for _, v in ep["divergence"]["series"]] for ep in report["episodes"]]
    window = mon["failure_auroc_common_window"]["window_s"]
    assert window == 1.0                                             # evaluator.early_window_s
    early = [[v for t, v in ep["divergence"]["series"] if t <= window] for ep in report["episodes"]]
    assert all(early)                                                # every episode imagined within 1 s
    for figure, values in (("failure_auroc", series), ("failure_auroc_common_window", early)):
        for key, reduce in (("max_divergence", np.max), ("mean_divergence", np.mean)):
            expected = auroc([float(reduce(v)) for v in values], failed)
            assert (mon[figure][key] is None) if np.isnan(expected) else mon[figure][key] == pytest.approx(expected)
    assert set(mon["quality_success_correlation"]) == {"psnr_db", "ssim"}
    for ep in report["episodes"]:
        div = ep["divergence"]
        assert div["n"] >= 20 and len(div["series"]) == div["n"]
        assert all(0.0 <= v < 1.0 for _, v in div["series"])
        assert div["max"] >= div["mean"] > 0.0
        assert ep["imagined_ssim_mean"] == pytest.approx(1.0 - div["mean"], abs=1e-4)
        assert 0.0 <= ep["progress_score"] <= 1.0 and set(ep["stages"]) == {"approach", "contact", "complete"}
        assert ep["latency_ms"]["n"] >= 10
    assert (out / report["videos"]["plate-slide_s100"]).stat().st_size > 10_000
    assert "divergence_over_time" in report["plots"]
