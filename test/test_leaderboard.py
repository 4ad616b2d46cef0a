"""The policy leaderboard's pieces without running graphs: protocol file checks, Wilson intervals,
cache keys that follow the checkpoint's content, rows assembled from reports, the markdown table."""

import json
import shutil

import pytest
from conftest import ROOT, tiny_videovla_checkpoint

from vla_policy_node.bench.leaderboard import (Leaderboard, Row, _overrides, assemble_row, early_warning_scores,
                                               leaderboard_tables, row_key, wilson_interval, write_leaderboard)


def test_the_shipped_protocol_has_one_reference_row():
    board = Leaderboard.load()
    assert board.reference.name == "oracle" and {r.name for r in board.rows} >= {"oracle", "bc", "videovla"}
    assert board.protocol["seeds"] == [100, 101, 102, 103, 104, 105] and len(board.protocol["tasks"]) == 5


def test_the_protocol_pins_the_executor_loop_and_a_row_may_override_it(tmp_path):
    """Rows are measured in the papers' sync loop whatever the robot file's default mode."""
    board = Leaderboard.load()
    videovla = next(r for r in board.rows if r.name == "videovla")
    assert _overrides(board, videovla, tmp_path)["executor"] | {"lockstep": "x"} == \
        {"mode": "sync", "merge": "ensemble", "lockstep": "x"}
    assert _overrides(board, board.reference, tmp_path)["executor"]["merge"] == "replace"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["rows"][0].pop("reference"), "exactly one row needs 'reference: true'"),
    (lambda d: d["protocol"].pop("seeds"), r"protocol: missing \['seeds'\]"),
    (lambda d: d["rows"].append({"name": "x", "backend": "bc", "colour": "red"}), "not a leaderboard description"),
])
def test_a_broken_protocol_file_is_named(tmp_path, edit, message):
    import yaml
    data = yaml.safe_load((ROOT / "config" / "bench" / "policies.yaml").read_text())
    edit(data)
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=message):
        Leaderboard.load(path)


def test_wilson_interval_matches_the_closed_form():
    low, high = wilson_interval(24, 30)
    assert low == pytest.approx(0.6269, abs=1e-4) and high == pytest.approx(0.9049, abs=1e-4)
    assert wilson_interval(30, 30)[1] == pytest.approx(1.0) and wilson_interval(30, 30)[0] < 1.0


def test_cache_key_follows_checkpoint_content_protocol_and_reference(tmp_path):
    board = Leaderboard.load()
    ckpt = tiny_videovla_checkpoint(tmp_path / "a")
    row = Row(name="videovla", backend="videovla", checkpoint=str(ckpt))
    key = row_key(board, row, "ref1")
    copy = tmp_path / "b"
    shutil.copytree(ckpt, copy)
    assert row_key(board, Row("videovla", "videovla", str(copy)), "ref1") == key     # same files, same key
    (copy / "normalization.json").write_text((copy / "normalization.json").read_text().replace("-1.0", "-0.9", 1))
    assert row_key(board, Row("videovla", "videovla", str(copy)), "ref1") != key     # other statistics
    assert row_key(board, row, "ref2") != key
    board.protocol["max_steps"] = 200
    assert row_key(board, row, "ref1") != key


def report(successes):
    episodes = []
    for i, ok in enumerate(successes):
        series = [[0.1 * k, (0.02 if ok else 0.09) + 0.001 * k] for k in range(15)]
        episodes.append({"name": f"drawer-open_s{100 + i}", "task": "drawer-open", "success": ok,
                         "progress_score": 1.0 if ok else 0.5, "divergence": {"series": series}})
    rate = sum(successes) / len(successes)
    return {"episodes": episodes, "protocol": {"held_out": True},
            "summary": {"per_task": {"drawer-open": {"success_rate": rate}},
                        "latency_ms": {"p50": 120.0, "p95": 300.0, "n": 400},
                        "monitor": {"episodes": len(successes),
                                    "failure_auroc_common_window": {"window_s": 1.0, "max_divergence": 1.0,
                                                                    "mean_divergence": 1.0}}}}


def test_row_assembled_from_the_closed_loop_report_and_offline_summary(tmp_path):
    board = Leaderboard.load()
    closed = {"report": report([True, True, True, False]), "wall_time_s": 60.0,
              "processes": {"policy": {"peak_rss_mb": 700.0}}}
    frames = {8: {"psnr": 36.0, "ssim": 0.98, "copy_psnr": 35.0, "copy_ssim": 0.97, "ceiling_psnr": 39.0,
                  "ceiling_ssim": 0.99, "n": 40}}
    offline = {"offline": {"actions": {"l1": 0.2}, "gripper_accuracy": 0.9, "frames": frames}}
    description = {"parameters": 3_000_000, "checkpoint_mb": 14.5,
                   "training": {"wall_time_s": 3600.0, "episodes": 95, "demonstrations_per_task": {"drawer-open": 20}}}
    row = assemble_row(board, Row("videovla", "videovla", "ckpt"), closed, offline, description)
    assert (row["successes"], row["episodes"], row["success_rate"]) == (3, 4, 0.75)
    assert row["success_ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    assert row["progress_score"] == pytest.approx(0.875) and row["policy_peak_rss_mb"] == 700.0
    assert row["offline"]["imagined"]["8"]["psnr"] == 36.0 and row["training_wall_time_s"] == 3600.0
    scores = early_warning_scores(closed["report"], 1.0)
    assert [s["failed"] for s in scores] == [False, False, False, True]
    assert scores[3]["max_divergence"] == pytest.approx(0.09 + 0.001 * 10)          # t <= 1.0 s only
    json_path, md_path = write_leaderboard(board, [row], tmp_path)
    md = md_path.read_text()
    assert "| videovla" in md and "3/4 = 0.75" in md and "36.0 / 0.980" in md and "policies_early_warning.png" in md
    assert json.loads(json_path.read_text())["rows"][0]["name"] == "videovla"
    assert (tmp_path / "policies_early_warning.png").stat().st_size > 5000
    # a checkpoint trained in two stages (--init-from) reports the time of both
    description["training"] |= {"init_wall_time_s": 1800.0, "init_steps": 9000}
    row = assemble_row(board, Row("videovla", "videovla", "ckpt"), closed, offline, description)
    assert row["training_wall_time_s"] == 5400.0
    # a K-shot row: demonstrations and action-free videos counted apart, IDM labels said
    description["training"] |= {"episodes": 275, "demonstrations_per_task": {"drawer-open": 5, "door-open": 20},
                                 "videos_per_task": {"drawer-open": 50, "door-open": 200}, "video_actions": "none"}
    row = assemble_row(board, Row("videovla_k", "videovla", "ckpt"), closed, offline, description)
    assert (row["demonstrations"], row["videos"]) == (25, 250)
    assert leaderboard_tables(board, [row])["main"][0]["demos"] == "25 + 250 videos"
    row["video_actions"] = "inverse_dynamics"
    assert leaderboard_tables(board, [row])["main"][0]["demos"] == "25 + 250 IDM-labelled videos"


def test_rows_are_cached_and_a_forced_row_reruns_alone(tmp_path, monkeypatch):
    import yaml

    from vla_policy_node.bench import leaderboard

    data = yaml.safe_load((ROOT / "config" / "bench" / "policies.yaml").read_text())
    data["rows"] = [data["rows"][0], {"name": "bc", "backend": "bc",
                                      "checkpoint": str(tiny_videovla_checkpoint(tmp_path / "bc", backend="bc"))}]
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    board = Leaderboard.load(path)
    runs = []

    def closed_loop(board, row, out_dir, ray=None):
        runs.append(row.name)
        (out_dir / "bags").mkdir(parents=True, exist_ok=True)                       # the reference's bags
        return {"report": report([True, False]), "processes": {}, "wall_time_s": 1.0}

    monkeypatch.setattr(leaderboard, "run_closed_loop", closed_loop)
    monkeypatch.setattr(leaderboard, "run_offline_scores", lambda *a: {"offline": {
        "actions": {"l1": 0.1}, "gripper_accuracy": None, "frames": {}}})
    monkeypatch.setattr(leaderboard, "_describe", lambda board, row: {"parameters": 1})
    first = leaderboard.run_leaderboard(board, tmp_path / "out", log=lambda *a: None)
    assert runs == ["oracle", "bc"] and [r["name"] for r in first] == ["oracle", "bc"]
    again = leaderboard.run_leaderboard(board, tmp_path / "out", log=lambda *a: None)
    assert runs == ["oracle", "bc"] and again == first                              # both read from the cache
    leaderboard.run_leaderboard(board, tmp_path / "out", only=["bc"], force=True, log=lambda *a: None)
    assert runs == ["oracle", "bc", "bc"]
    rows = json.loads((tmp_path / "out" / "policies.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["oracle", "bc"]                            # the other row kept


def test_a_row_whose_checkpoint_is_missing_is_refused_at_load(tmp_path):
    import yaml
    data = yaml.safe_load((ROOT / "config" / "bench" / "policies.yaml").read_text())
    data["rows"][1]["checkpoint"] = str(tmp_path / "nowhere")
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="row bc: checkpoint .*nowhere' not found"):
        Leaderboard.load(path)


def test_a_row_on_ray_runs_the_protocol_episodes_and_keeps_each_nodes_largest_peak(tmp_path, monkeypatch):
    """`vla-bench policies --ray`: the row's episodes go to evaluation.distributed as one job
    (the protocol's tasks and seeds, the row's node parameters, the checkpoint as an absolute
    path); the row reads the merged report and the largest peak memory of each node."""
    from vla_policy_node.bench import leaderboard
    from vla_policy_node.evaluation import distributed

    board = Leaderboard.load()
    row = next(r for r in board.rows if r.name == "bc")
    seen = {}

    def run_on_ray(job, out_dir, options, progress=True):
        seen.update(job=job, options=options)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(report([True])))
        tries = [{"processes": {"policy": {"exit_code": 0, "peak_rss_mb": mb}}} for mb in (500.0, 620.5)]
        return {"report": out_dir / "report.json", "distributed": {
            "failed": [], "wall_time_s": 12.0, "per_episode": [{"tries": [t]} for t in tries]}}

    monkeypatch.setattr(distributed, "run_on_ray", run_on_ray)
    options = distributed.RayOptions(workers=2)
    closed = leaderboard.run_closed_loop(board, row, tmp_path / "closed", options)
    job = seen["job"]
    assert job.tasks == board.protocol["tasks"] and job.seeds == board.protocol["seeds"]
    assert job.overrides["policy"]["backend"] == "bc" and job.overrides["policy"]["checkpoint"].startswith("/")
    assert "seeds" not in job.overrides["evaluator"] and job.overrides["evaluator"]["lockstep"] == "true"
    assert seen["options"] is options
    assert closed["processes"]["policy"]["peak_rss_mb"] == 620.5 and closed["wall_time_s"] == 12.0
    assert len(closed["report"]["episodes"]) == 1
