"""Run reports: report.json / report.md, decodable plots, side-by-side videos, the run index."""

import json

import cv2
import matplotlib.image
import numpy as np
import pytest

from vla_policy_node.data.dataset import DatasetError, load_dataset
from vla_policy_node.evaluation.reports import EpisodeRecord, write_run_report

DT = 0.0125
FRAMES = 24
OFFSETS_S = [4 * DT, 8 * DT]
IMAGINED_COLOR = (30, 200, 60)


def _real_frame(k: int) -> np.ndarray:
    """A 128x128 scene with a square that moves with the step."""
    frame = np.full((128, 128, 3), 90, np.uint8)
    frame[40:70, 10 + 3 * k: 40 + 3 * k] = (220, 220, 40)
    return frame


def _episode(name: str, task: str, seed: int, success: bool, rng, with_media: bool = True) -> EpisodeRecord:
    imagined = [(k * DT, [np.full((64, 64, 3), IMAGINED_COLOR, np.uint8)] * 2) for k in range(0, FRAMES, 8)]
    return EpisodeRecord(
        name=name, task=task, seed=seed, success=success, steps=FRAMES,
        time_to_success_s=FRAMES * DT if success else None, progress_score=1.0 if success else 0.4,
        latencies_ms=list(rng.normal(30.0, 3.0, 6)) if with_media else [],
        divergence=[(k * DT, float(rng.uniform(0.05, 0.1) if success else rng.uniform(0.2, 0.3)))
                    for k in range(4, FRAMES, 4)] if with_media else [],
        real_frames=[_real_frame(k) for k in range(FRAMES)] if with_media else [],
        imagined_frames=imagined if with_media else [],
        action_error_per_step=list(np.linspace(0.1, 0.3, 8)) if with_media else None,
        frame_times_s=[k * DT for k in range(FRAMES)], frame_dt_s=DT, imagined_offsets_s=OFFSETS_S,
        instruction=f"do {task}", bag=f"/recordings/{name}", reason="success" if success else "step_limit")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    episodes = [_episode("door-open_s1", "door-open", 1, True, rng),
                _episode("door-open_s2", "door-open", 2, False, rng),
                _episode("drawer-open_s1", "drawer-open", 1, True, rng)]
    summary = {"mode": "closed_loop", "policy": {"backend": "videovla", "checkpoint": "checkpoints/a"},
               "robot": "metaworld_sawyer", "executor": {"mode": "rtc"},
               "tables": {"Extra figures": [{"name": "x", "value": 1.5}]}, "notes": ["a note for the reader"],
               "index_metrics": {"action_l1": 0.2}}
    paths = write_run_report(root / "run_a", summary, episodes)
    return root, paths, episodes


def test_report_files_and_json_rows(first_run):
    root, paths, episodes = first_run
    out = root / "run_a"
    for key in ("report_json", "report_md", "index_json", "index_md"):
        assert paths[key].is_file() and paths[key].stat().st_size > 100
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert (s["episodes"], s["successes"]) == (3, 2) and s["success_rate"] == pytest.approx(2 / 3)
    assert s["per_task"]["door-open"]["success_rate"] == pytest.approx(0.5)
    assert s["per_task"]["drawer-open"]["mean_time_to_success_s"] == pytest.approx(FRAMES * DT)
    assert s["latency_ms"]["n"] == 18 and 20 < s["latency_ms"]["p50"] < 40
    # the failed episode diverges most: mean divergence ranks it perfectly
    assert s["divergence_failure_auroc"] == pytest.approx(1.0)
    assert report["mode"] == "closed_loop" and report["executor"] == {"mode": "rtc"}
    assert [e["name"] for e in report["episodes"]] == [e.name for e in episodes]
    row = report["episodes"][1]
    assert (row["task"], row["seed"], row["success"], row["reason"]) == ("door-open", 2, False, "step_limit")
    assert "real_frames" not in row and "imagined_frames" not in row
    assert len(row["divergence"]["series"]) == 5
    md = (out / "report.md").read_text()
    for text in ("videovla on metaworld_sawyer", "## Extra figures", "a note for the reader",
                 "door-open_s2", "plots/latency_histogram.png", "videos/drawer-open_s1.mp4"):
        assert text in md
    assert "| door-open | 2 | 0.500 |" in " ".join(md.split())          # table cells, padding aside


def test_report_rows_lead_training_to_their_bags(first_run):
    """Training reads evaluator outputs through report.json: the rows carry task, seed, success, bag."""
    root, _, _ = first_run
    with pytest.raises(DatasetError, match="door-open_s1"):      # the rows are followed to their bags
        load_dataset(root / "run_a", "metaworld_sawyer")


def test_plots_decode_and_are_not_blank(first_run):
    root, paths, _ = first_run
    names = ["success_per_task", "latency_histogram", "action_error_per_step", "divergence_over_time"]
    for name in names:
        path = root / "run_a" / "plots" / f"{name}.png"
        assert paths[f"plot:{name}"] == path and path.stat().st_size > 10_000
        image = matplotlib.image.imread(path)
        assert image.shape[0] >= 300 and image.shape[1] >= 300
        bgr = cv2.imread(str(path))
        assert bgr is not None and bgr.std() > 10              # axes, bars, lines: not an empty canvas


def test_video_has_one_frame_per_real_frame_and_shows_imagination_for_its_time(first_run):
    root, paths, episodes = first_run
    path = root / "run_a" / "videos" / "door-open_s1.mp4"
    assert paths["video:door-open_s1"] == path
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    assert len(frames) == FRAMES
    assert frames[0].shape == (256, 512, 3)                   # 128 real and 64 imagined both up-scaled to 256
    right = lambda f: f[40:, 256 + 20:-20].reshape(-1, 3).mean(axis=0)  # noqa: E731  (below the label strip)
    # steps 0-3: nothing imagined for that time yet -> the blank panel
    assert np.abs(right(frames[2]) - 40).max() < 8
    # from step 4 (0.05 s, imagined by the chunk at t=0) the imagined frame is shown
    assert np.abs(right(frames[5]) - np.array(IMAGINED_COLOR)).max() < 12
    # the left panel is the real frame, up-scaled
    left = cv2.resize(frames[10][:, :256], (128, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(left[30:].astype(int) - _real_frame(10)[30:]).mean() < 6


def _panel_colors(path) -> list[np.ndarray]:
    """Mean RGB of each video frame's right (imagined) panel, below its label strip."""
    cap = cv2.VideoCapture(str(path))
    colors = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        right = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[40:, 256 + 20:-20]
        colors.append(right.reshape(-1, 3).mean(axis=0))
    return colors


def test_video_of_an_evaluated_episode_shows_the_imagined_frame_predicted_for_each_time(tmp_path):
    """As the evaluator keeps an episode: a chunk every 2 steps imagines the frames 8, 16 and 32 steps
    ahead, with the offsets in s as float32 (vla_msgs/ImaginedFuture.frame_offsets), so several
    chunks predict each instant. From the first predicted instant (step 8) on, every real frame shows
    the newest prediction for its own time; before it, the blank panel."""
    from vla_policy_node.core.episode_log import EpisodeLog
    from vla_policy_node.evaluation.closed_loop_report import episode_record
    from vla_policy_node.evaluation.episode_tracker import EpisodeTracker
    from vla_policy_node.evaluation.reports import write_episode_video

    ahead = (8, 16, 32)                                     # steps ahead of each imagined frame
    offsets = [float(np.float32(k * DT)) for k in ahead]   # s, as rclpy hands the float32[] field over
    start = 1000.0                                          # the reset stamp on the graph's clock, s

    def imagined_color(source_step: int, target_step: int) -> tuple[int, int, int]:
        """A colour per (source, target) pair; instants after the 40 filmed steps share one."""
        return 30 + 10 * (min(target_step, 40) // 2), 30 + 10 * (source_step // 2), 120

    tracker, log = EpisodeTracker(start), EpisodeLog(start, max_frames=40, frame_stride=2, max_imagined=80)
    for step in range(40):
        stamp = round(start + step * DT, 9)                 # ns stamps, as to_sec() gives them
        tracker.on_env_state(stamp, step)
        log.add_real_frame(stamp, lambda s=step: _real_frame(s))
        if step % 2 == 0:
            log.add_imagined(stamp, [np.full((64, 64, 3), imagined_color(step, step + k), np.uint8) for k in ahead],
                             offsets)
    record = episode_record("door-open_s100", "door-open", 100, "open the door", tracker, log, "step_limit", "", 1.0,
                            DT)
    assert len(record.imagined_frames) == 20 and len(record.real_frames) == 20     # every even step kept
    path = tmp_path / "videos" / "door-open_s100.mp4"
    assert write_episode_video(record, path) == 20
    colors = _panel_colors(path)
    assert len(colors) == 20
    candidates = {"blank": np.array([40.0, 40.0, 40.0])}
    candidates.update({(s, s + k): np.array(imagined_color(s, s + k), float)
                       for s in range(0, 40, 2) for k in ahead if s + k < 40})      # the instants filmed
    for i, color in enumerate(colors):
        step = 2 * i                                         # real frame i is step 2i
        shown = min(candidates, key=lambda c: np.abs(candidates[c] - color).max())
        expected = "blank" if step < 8 else (step - 8, step)  # newest prediction of this very step
        assert shown == expected, f"step {step}: panel {color.round(1)} shows {shown}, expected {expected}"


def test_empty_data_skips_plots_and_says_so(tmp_path):
    rng = np.random.default_rng(1)
    episodes = [_episode("reach_s0", "reach", 0, True, rng, with_media=False)]
    paths = write_run_report(tmp_path / "bare", {"mode": "offline", "policy": {"backend": "oracle"}}, episodes)
    assert "plot:success_per_task" in paths
    for name in ("latency_histogram", "action_error_per_step", "divergence_over_time"):
        assert f"plot:{name}" not in paths and not (tmp_path / "bare" / "plots" / f"{name}.png").exists()
    assert not any(k.startswith("video:") for k in paths)
    md = (tmp_path / "bare" / "report.md").read_text()
    assert "latency_histogram: not drawn (no latency measurements)" in md
    assert "divergence_over_time: not drawn (no imagination divergence recorded)" in md
    assert "none (no episode carried real frames)" in md
    report = json.loads((tmp_path / "bare" / "report.json").read_text())
    assert report["plots_skipped"]["action_error_per_step"].startswith("no action errors")
    assert report["summary"]["divergence_failure_auroc"] is None           # nan -> null in JSON


def test_index_gains_one_row_per_run(first_run):
    root, paths, _ = first_run
    index = root / "runs_index"
    assert paths["index_json"] == index / "index.json"
    rows = json.loads((index / "index.json").read_text())["runs"]
    assert len(rows) == 1
    rng = np.random.default_rng(2)
    second = {"mode": "closed_loop", "policy": {"backend": "videovla", "checkpoint": "checkpoints/b"},
              "robot": "metaworld_sawyer", "executor": {"mode": "replace"}, "index_metrics": {"action_l1": 0.4}}
    write_run_report(root / "run_b", second, [_episode("door-open_s1", "door-open", 1, False, rng, False)])
    rows = json.loads((index / "index.json").read_text())["runs"]
    assert [r["checkpoint"] for r in rows] == ["checkpoints/a", "checkpoints/b"]
    assert [r["executor_mode"] for r in rows] == ["rtc", "replace"]
    assert [r["success_rate"] for r in rows] == [pytest.approx(2 / 3), 0.0]
    assert rows[0]["latency_p50_ms"] > 0 and rows[1]["latency_p50_ms"] is None
    assert [r["action_l1"] for r in rows] == [0.2, 0.4]
    md = (index / "index.md").read_text()
    assert str((root / "run_a").resolve()) in md and str((root / "run_b").resolve()) in md
    assert md.count("\n| ") == 3                                            # header + 2 runs
    # re-running into the same folder replaces that run's row
    write_run_report(root / "run_b", second, [_episode("door-open_s1", "door-open", 1, True, rng, False)])
    rows = json.loads((index / "index.json").read_text())["runs"]
    assert len(rows) == 2 and rows[1]["success_rate"] == 1.0


# ---- the evaluator's run description (evaluation/closed_loop_report.py) --------------------------

def _closed_loop_episode(name: str, success: bool, replay: dict | None = None):
    """An episode as the evaluator ends it: tracker (3 steps from t=2 s), log (two compared frames)."""
    from vla_policy_node.core.episode_log import EpisodeLog
    from vla_policy_node.evaluation.closed_loop_report import episode_record, monitor_row
    from vla_policy_node.evaluation.episode_tracker import EpisodeTracker

    tracker, log = EpisodeTracker(2.0), EpisodeLog(2.0)
    tracker.on_success(False)
    for k in (1, 2, 3):
        tracker.on_env_state(2.0 + k * DT, k)
    tracker.on_success(success)
    divergence = (0.05, 0.1) if success else (0.3, 0.4)
    for k, d in enumerate(divergence):
        log.add_divergence(2.0 + (k + 1) * DT, 30.0 - 10 * d, 1.0 - d, d, d > 0.2, "replan")
    log.latencies_ms += [20.0, 30.0]
    record = episode_record(name, "door-open", 100, "open the door", tracker, log, "success" if success else "timeout",
                            "", 4.0, DT, extra=None if replay is None else {"replay": replay})
    return record, monitor_row(record.success, log)


def test_closed_loop_episode_record_and_run_description():
    from vla_policy_node.core.progress import StageThresholds
    from vla_policy_node.evaluation.closed_loop_report import EvaluationProtocol, run_description

    (ok, ok_row), (failed, failed_row) = _closed_loop_episode("a", True), _closed_loop_episode("b", False)
    assert (ok.steps, ok.time_to_success_s, ok.progress_score) == (3, pytest.approx(3 * DT), 1.0)
    assert failed.time_to_success_s is None and failed.progress_score == 0.0
    assert ok.extra["duration_s"] == round(3 * DT, 4) and ok.extra["divergence_exceeded"] == 0
    assert failed.extra["divergence_exceeded"] == 2 and failed.extra["monitor_actions"] == {"replan": 2}
    assert failed_row == {"success": False, "divergence": [0.3, 0.4], "times": pytest.approx([DT, 2 * DT]),
                          "psnr": [27.0, 26.0], "ssim": pytest.approx([0.7, 0.6])}
    protocol = EvaluationProtocol("closed_loop", True, 90.0, ["door-open"], [5, 100], 300, 100, "warn", False,
                                  StageThresholds())
    run = run_description(protocol, {"executor": True}, [ok_row, failed_row], [ok, failed], "videovla",
                          "metaworld_sawyer", "sim_demo", ["/clock"], replay_bag="never used in closed loop")
    assert list(run) == ["mode", "policy", "robot", "graph", "protocol", "recorded_topics", "summary",
                         "index_metrics", "notes", "tables"]
    assert run["summary"]["monitor"]["failure_auroc"]["max_divergence"] == 1.0
    assert run["index_metrics"] == {"divergence_auroc_max": 1.0, "imagined_psnr_db": pytest.approx(27.875),
                                    "progress_score_mean": 0.5}
    assert run["notes"][0].startswith("imagination monitor: divergence = 1 - SSIM")
    assert run["notes"][1].startswith("seeds [5] are below min_eval_seed=100")
    assert list(run["tables"]) == ["Imagination monitor"] and "replay_bag" not in run["summary"]


def test_a_run_without_failures_prints_no_failure_auroc(tmp_path):
    """One outcome class: every AUROC of the report is n/a in report.md and null in report.json."""
    from vla_policy_node.core.progress import StageThresholds
    from vla_policy_node.evaluation.closed_loop_report import EvaluationProtocol, run_description

    (a, a_row), (b, b_row) = _closed_loop_episode("door-open_s100", True), _closed_loop_episode("door-open_s101", True)
    b.seed = 101
    protocol = EvaluationProtocol("closed_loop", True, 90.0, ["door-open"], [100, 101], 300, 100, "warn", False,
                                  StageThresholds(), early_window_s=1.0)
    run = run_description(protocol, {}, [a_row, b_row], [a, b], "videovla", "metaworld_sawyer", "sim_demo", [])
    row, = run["tables"]["Imagination monitor"]
    aurocs = {k: v for k, v in row.items() if "AUROC" in k}
    assert len(aurocs) == 4 and set(aurocs.values()) == {"n/a (one class: 2 successes, 0 failures)"}
    assert row["early window (s)"] == 1.0                       # the window's length, under its own name
    write_run_report(tmp_path / "run", run, [a, b])
    md = (tmp_path / "run" / "report.md").read_text()
    assert "AUROC n/a (one class: 2 successes, 0 failures)" in md          # the headline
    table = md.split("## Imagination monitor")[1].split("##")[0]
    assert table.count("n/a (one class: 2 successes, 0 failures)") == 4
    header, _, cells = (line.split("|")[1:-1] for line in table.strip().splitlines())
    assert {h.strip(): c.strip() for h, c in zip(header, cells)}["early window (s)"] == "1.000"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["summary"]["divergence_failure_auroc"] is None
    assert report["summary"]["monitor"]["failure_auroc"] == {"max_divergence": None, "mean_divergence": None}
    assert report["index_metrics"]["divergence_auroc_max"] is None


def test_replay_run_description_scores_the_dry_run_commands():
    from vla_policy_node.core.progress import StageThresholds
    from vla_policy_node.evaluation.closed_loop_report import EvaluationProtocol, run_description

    score = {"matched": 40, "commanded": 44, "recorded": 50, "coverage": 0.8, "l1": 0.02, "l2": 0.03,
             "per_dim_l1": {"dx": 0.01, "grip": 0.05}}
    record, row = _closed_loop_episode("door-open_s100", True, replay=score)
    protocol = EvaluationProtocol("replay", True, 90.0, [], [], 300, 100, "warn", True, StageThresholds())
    run = run_description(protocol, {}, [], [record], "videovla", "metaworld_sawyer", "replay", [], "bags/x")
    assert run["notes"] == ["imagination monitor: no imagined frame met a real frame (the backend does not "
                            "imagine, or policy.decode_imagined is false, or no imagination_monitor node ran)"]
    assert {k: run["summary"][k] for k in ("replay_action_l1", "replay_commands_matched", "replay_coverage",
                                           "replay_bag")} == {"replay_action_l1": 0.02, "replay_commands_matched": 40,
                                                              "replay_coverage": 0.8, "replay_bag": "bags/x"}
    assert run["index_metrics"]["action_l1"] == 0.02
    table = run["tables"]["Replay: dry-run commands vs recorded commands (L1 per dimension)"]
    assert table == [{"episode": "door-open_s100", "L1 dx": 0.01, "L1 grip": 0.05, "L1 all": 0.02, "matched": 40,
                      "recorded": 50}]
