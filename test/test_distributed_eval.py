"""Closed-loop evaluation on Ray (evaluation/distributed.py): a local Ray instance with 2 workers,
each episode its own graph on its own ROS domain, merged into the report a local run of the same
episodes writes; a worker killed mid-episode is retried and named. Plus the run-record merge."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from vla_policy_node.core.progress import StageThresholds
from vla_policy_node.evaluation.closed_loop_report import EvaluationProtocol
from vla_policy_node.evaluation.distributed import RayOptions, compare_runs
from vla_policy_node.evaluation.reports import EpisodeRecord
from vla_policy_node.evaluation.run_record import RunRecord, merge_records

ORACLE = ["--backend", "oracle", "--set", "executor.merge:=replace", "--tasks", "button-press",
          "--max-steps", "120", "--lockstep", "--quiet"]
EPISODES = [*ORACLE, "--seeds", "100,101"]


def _part(tasks, seeds, backend="oracle"):
    protocol = EvaluationProtocol("closed_loop", True, 60.0, tasks, seeds, 100, 100, "warn", True,
                                  StageThresholds(0.12, 0.15, 0.01), 1.0)
    episodes = [EpisodeRecord(f"{t}_s{s}", t, s, success=s % 2 == 0, steps=40 + s, progress_score=0.1 * s,
                              latencies_ms=[1.0 / 3.0, 2.0 + s], divergence=[(0.1, 0.2), (0.2, 1.0 / 7.0)],
                              extra={"wall_time_s": 1.5}) for t in tasks for s in seeds]
    rows = [{"success": e.success, "divergence": [0.2, 1.0 / 7.0], "times": [0.1, 0.2], "psnr": [30.0],
             "ssim": [0.9]} for e in episodes]
    return RunRecord(protocol, {"sim_bridge": True}, backend, "metaworld_sawyer", "sim_demo", ["/a"], episodes, rows)


def test_run_record_round_trip_keeps_every_float(tmp_path):
    record = _part(["button-press"], [100, 101])
    record.save(tmp_path)
    loaded = RunRecord.load(tmp_path)
    assert loaded.protocol == record.protocol
    assert loaded.episodes[1].latencies_ms == [1.0 / 3.0, 103.0]          # not rounded
    assert loaded.episodes[0].divergence == [(0.1, 0.2), (0.2, 1.0 / 7.0)]
    assert loaded.monitor_rows == record.monitor_rows


def test_merge_orders_episodes_as_one_run_and_refuses_what_is_not_one_run(tmp_path):
    parts = [_part(["drawer-open"], [101]), _part(["button-press"], [101]), _part(["button-press"], [100]),
             _part(["drawer-open"], [100])]
    merged = merge_records(parts, ["button-press", "drawer-open"], [100, 101])
    assert [e.name for e in merged.episodes] == ["button-press_s100", "button-press_s101", "drawer-open_s100",
                                                 "drawer-open_s101"]
    assert merged.protocol.tasks == ["button-press", "drawer-open"] and merged.protocol.seeds == [100, 101]
    whole = _part(["button-press", "drawer-open"], [100, 101])
    assert [dataclasses.asdict(e) for e in merged.episodes] == [dataclasses.asdict(e) for e in whole.episodes]
    assert merged.monitor_rows == whole.monitor_rows
    merged.write_report(tmp_path / "merged", tmp_path / "index")
    whole.write_report(tmp_path / "whole", tmp_path / "index")
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("merged", "whole"))
    for r in (a, b):
        r.pop("created")
    assert a == b

    with pytest.raises(ValueError, match="backend"):
        merge_records([_part(["button-press"], [100]), _part(["button-press"], [101], backend="bc")])
    with pytest.raises(ValueError, match="more than one part"):
        merge_records([_part(["button-press"], [100]), _part(["button-press"], [100])])


def test_ray_options_keep_domain_ids_in_the_safe_range():
    with pytest.raises(ValueError, match="ROS_DOMAIN_IDs 95-104"):
        RayOptions(workers=10, domain_base=95)
    with pytest.raises(ValueError, match="workers"):
        RayOptions(workers=0)


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "vla_policy_node.evaluation.cli", "closed-loop", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_ray_run_equals_the_local_run_episode_by_episode(tmp_path):
    local = _cli(*EPISODES, "--output", str(tmp_path / "local"))
    out = local.communicate(timeout=300)[0]
    assert local.returncode == 0, out[-3000:]
    ray_run = _cli(*EPISODES, "--output", str(tmp_path / "ray"), "--ray", "--workers", "2", "--domain-base", "86")
    out = ray_run.communicate(timeout=400)[0]
    assert ray_run.returncode == 0, out[-3000:]
    assert "ray: 2/2 episodes on 2 workers" in out

    comparison = compare_runs(tmp_path / "local", tmp_path / "ray", "metaworld_sawyer")
    assert comparison == {"episodes": 2, "equal": True, "differences": []}
    local_report, ray_report = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("local", "ray"))
    section = ray_report.pop("distributed")
    assert section["completed"] == 2 and section["failed"] == [] and section["retried"] == []
    assert sorted(t["domain_id"] for e in section["per_episode"] for t in e["tries"]) == [86, 87]
    assert all(e["overhead_s"] > 0 for e in section["per_episode"])
    assert ray_report["summary"]["successes"] == local_report["summary"]["successes"] == 2
    assert ray_report["protocol"] == local_report["protocol"]
    for a, b in zip(local_report["episodes"], ray_report["episodes"]):
        assert (a["name"], a["success"], a["steps"], a["time_to_success_s"]) == \
               (b["name"], b["success"], b["steps"], b["time_to_success_s"])
    for name in ("button-press_s100", "button-press_s101"):       # bags and videos where a local run puts them
        assert (tmp_path / "ray" / "bags" / name / "metadata.yaml").is_file()
        assert (tmp_path / "ray" / "videos" / f"{name}.mp4").is_file()
        assert (tmp_path / "ray" / "shards" / name / "logs" / "policy.log").is_file()


def _graph_processes(root: psutil.Process) -> list[psutil.Process]:
    return [p for p in root.children(recursive=True) if "vla_" in " ".join(p.cmdline())]


@pytest.mark.slow
def test_a_worker_lost_mid_episode_is_retried_and_named(tmp_path):
    run = _cli(*ORACLE, "--seeds", "100", "--output", str(tmp_path / "ray"), "--ray", "--workers", "2",
               "--domain-base", "88")
    killed, deadline = None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline:
        for worker in psutil.process_iter(["cmdline"]):
            try:
                names = [p.name() + " ".join(p.cmdline()) for p in worker.children()]
                if "_ray_episode" in " ".join(worker.info["cmdline"] or []) and \
                        any("vla_evaluator" in n for n in names):
                    nodes = _graph_processes(worker)
                    time.sleep(3.0)                      # the episode is under way
                    worker.kill()
                    killed = nodes
                    break
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.5)
    assert killed, "no Ray worker running a graph was found"
    out = run.communicate(timeout=400)[0]
    assert run.returncode == 0, out[-3000:]
    section = json.loads((tmp_path / "ray" / "report.json").read_text())["distributed"]
    assert section["retried"] == ["button-press_s100"] and section["failed"] == []
    tries = section["per_episode"][0]["tries"]
    assert len(tries) == 2 and tries[0]["error"] and "Worker" in tries[0]["error"] and tries[1]["error"] is None
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["summary"]["episodes"] == 1 and report["episodes"][0]["success"]
    # the lost worker's graph did not outlive it (its nodes got SIGTERM when their runner died)
    time.sleep(2.0)
    assert not [p for p in killed if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], \
        [p.cmdline() for p in killed if p.is_running()]
    assert os.path.isdir(tmp_path / "ray" / "bags" / "button-press_s100")
