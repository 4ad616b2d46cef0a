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
    for text in ("videovla on metaworld_sawyer", "| door-open | 2 | 0.500", "## Extra figures", "a note for the reader",
                 "door-open_s2", "plots/latency_histogram.png", "videos/drawer-open_s1.mp4"):
        assert text in md


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


def test_closed_loop_records_keep_their_report_fields(tmp_path):
    """The closed-loop evaluator's records convert without losing what core/report.py wrote."""
    from vla_policy_node.core.report import EpisodeRecord as ClosedLoopRecord
    from vla_policy_node.core.report import write_report
    from vla_policy_node.evaluation.reports import from_closed_loop_record

    records = [ClosedLoopRecord("door-open", 3, "open the door", True, 120, 1.5, 12.0, "success", "bags/door-open_s3"),
               ClosedLoopRecord("door-open", 4, "open the door", False, 300, 3.75, 30.0, "step_limit", "")]
    meta = {"policy": {"backend": "oracle"}, "robot": "r"}
    old = json.loads(write_report(tmp_path / "old", records, meta).read_text())
    paths = write_run_report(tmp_path / "new", meta,
                             [from_closed_loop_record(r, latencies_ms=[12.0, 14.0]) for r in records])
    new = json.loads(paths["report_json"].read_text())
    for key in ("episodes", "successes", "success_rate"):
        assert new["summary"][key] == old["summary"][key]
    assert new["summary"]["per_task"]["door-open"]["mean_steps_to_success"] == 120
    for old_row, new_row in zip(old["episodes"], new["episodes"]):
        assert {k: new_row[k] for k in old_row} == old_row            # every field of the old rows, same values
    assert new["episodes"][0]["time_to_success_s"] == 1.5 and new["episodes"][1]["time_to_success_s"] is None
