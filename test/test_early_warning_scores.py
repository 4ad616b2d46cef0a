"""scripts/early_warning_scores.py on bags written here: episodes whose imagination matched the real
camera must score below episodes whose imagination did not, on the monitor's divergence and on its
excess over the still frame; frames after the window are left out; chunks that disagree spread."""

import importlib.util
import json

import cv2
import numpy as np
import pytest
from conftest import ROOT, BagWriter

DT_NS = 12_500_000          # the Sawyer's 80 Hz step


@pytest.fixture(scope="module")
def scores_module():
    spec = importlib.util.spec_from_file_location("early_warning_scores", ROOT / "scripts" / "early_warning_scores.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scene(k: int) -> np.ndarray:
    """The corner camera at step k: a bright square sliding right on a textured background."""
    rng = np.random.default_rng(0)
    frame = (rng.random((128, 128, 3)) * 60).astype(np.uint8)
    x = 10 + 2 * k
    frame[40:80, x:x + 30] = 230
    return frame


def write_episode(path, imagination: str, chunk_noise: float, steps: int = 120) -> None:
    """imagination: 'real' (the real future frame), 'still' (the source frame: nothing moves) or
    'noise'. Every 2 steps a chunk of 8 actions and its imagined frames 8 and 16 steps ahead."""
    bag = BagWriter(path)
    T, header, put = bag.types, bag.header, bag.put

    def image(t, pixels):
        return T["sensor_msgs/msg/Image"](header=header(t), height=pixels.shape[0], width=pixels.shape[1],
                                          encoding="rgb8", is_bigendian=0, step=pixels.shape[1] * 3,
                                          data=np.ascontiguousarray(pixels).reshape(-1))

    rng = np.random.default_rng(1)
    t0 = 10 * 10**9
    for k in range(steps):
        t = t0 + k * DT_NS
        put("/vla/sim/camera/corner/image_raw", "sensor_msgs/msg/Image", t, image(t, scene(k)))
        if k % 2:
            continue
        actions = np.tile([0.5, 0.0, 0.0, -1.0], (8, 1)) + chunk_noise * rng.standard_normal((8, 4))
        put("/vla/action_chunk", "vla_msgs/msg/ActionChunk", t, T["vla_msgs/msg/ActionChunk"](
            header=header(t), chunk_id=k, obs_seq=k, episode_id="e", action_space="ee_delta",
            action_names=["dx", "dy", "dz", "gripper"], horizon=8, action_dim=4, dt=DT_NS / 1e9,
            actions=actions.astype(np.float32).reshape(-1), actions_normalized=actions.astype(np.float32).reshape(-1),
            start_index=0, prefix_length=0, backend="test", preprocess_ms=0.0, inference_ms=0.0,
            postprocess_ms=0.0, obs_age_ms=0.0))
        frames = []
        for ahead in (8, 16):
            guess = {"real": scene(k + ahead), "still": scene(k),
                     "noise": rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)}[imagination]
            frames.append(image(t, cv2.resize(guess, (64, 64), interpolation=cv2.INTER_AREA)))   # imagined at 64 px
        put("/vla/imagined", "vla_msgs/msg/ImaginedFuture", t, T["vla_msgs/msg/ImaginedFuture"](
            header=header(t), chunk_id=k, camera_names=["corner"], frames=frames,
            frame_offsets=np.array([8 * DT_NS / 1e9, 16 * DT_NS / 1e9], np.float32)))
    bag.close()


def test_matched_imagination_scores_low_and_disagreeing_chunks_spread(scores_module, tmp_path):
    from vla_policy_node.core.embodiment import load_robot

    camera = load_robot("metaworld_sawyer").config.cameras[0]
    runs = {}
    for name, imagination, noise in (("real", "real", 0.0), ("still", "still", 0.0), ("noise", "noise", 0.3)):
        write_episode(tmp_path / name, imagination, noise)
        runs[name] = scores_module.episode_scores(tmp_path / name, camera, window_s=1.0)
    real, still, noise = runs["real"], runs["still"], runs["noise"]
    assert real["max_divergence"] < 0.05 < noise["max_divergence"]
    # the still frame as imagination: its excess over the still frame is exactly zero
    assert still["max_excess"] == pytest.approx(0.0, abs=1e-9) and still["worse_than_still"] == 0.0
    assert real["mean_excess"] < 0 < noise["mean_excess"] and noise["worse_than_still"] == 1.0
    # identical chunks do not spread; noisy ones do
    assert real["max_spread"] == pytest.approx(0.0, abs=1e-6) and noise["mean_spread"] > 0.1
    # a window shorter than the first imagined frame's offset leaves no imagined frame to score
    early = scores_module.episode_scores(tmp_path / "noise", camera, window_s=0.05)
    assert early["max_divergence"] is None and early["max_spread"] is not None


def test_the_command_prints_an_auroc_per_score(scores_module, tmp_path, monkeypatch, capsys):
    bags = tmp_path / "bags"
    episodes = []
    for i, (imagination, success) in enumerate((("real", True), ("real", True), ("noise", False))):
        write_episode(bags / f"ep{i}", imagination, 0.0 if success else 0.3, steps=90)
        episodes.append({"name": f"ep{i}", "success": success, "bag": str(bags / f"ep{i}")})
    (tmp_path / "report.json").write_text(json.dumps({"robot": "metaworld_sawyer", "episodes": episodes}))
    monkeypatch.setattr("sys.argv", ["early_warning_scores.py", str(tmp_path), "--json", str(tmp_path / "s.json")])
    scores_module.main()
    out = capsys.readouterr().out
    assert "3 episodes, 1 failed" in out
    assert "max_divergence     1.00" in out and "max_spread         1.00" in out
    assert len(json.loads((tmp_path / "s.json").read_text())) == 3
