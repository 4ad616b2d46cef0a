"""`vla-bench latency`: the cells it builds, the figures it computes from the executor's command log,
the paired comparison, and (slow) a small description run through the graph end to end."""

import json

import numpy as np
import pytest
import yaml

from vla_policy_node.bench.latency import LatencyBench, executor_figures, paired_difference
from vla_policy_node.core.embodiment import config_root


def test_the_shipped_description_builds_full_and_short_cells():
    bench = LatencyBench.load()
    cells = {c.name: c for c in bench.cells()}
    full = cells["videovla-it_rtc-d16"]
    assert full.board.protocol["seeds"] == bench.protocol["seeds"] and full.delay == 16
    assert full.row.set["executor.simulated_delay_steps"] == "[16]"
    assert full.row.set["executor.mode"] == "async_rtc" and full.row.set["policy.rtc"] == "inpainting"
    assert cells["videovla_h40-tt_rtc-d4"].board.protocol["seeds"] == bench.short_seeds
    assert cells["vita-sync-d8"].board.protocol["seeds"] == bench.short_seeds
    assert all(c.board.protocol["seeds"] == bench.short_seeds for c in bench.cells(short=True))
    # remedies differ by their own settings only
    base = {k: v for k, v in cells["videovla-async_replace-d8"].row.set.items()}
    vlash = cells["videovla-vlash-d8"].row.set
    assert {k: v for k, v in vlash.items() if base.get(k) != v} == {"policy.future_state": True}
    free, = bench.free_running_cells()
    assert free.board.protocol["lockstep"] is False and free.real_time_factor == 0.25


def test_an_unknown_remedy_is_named(tmp_path):
    data = yaml.safe_load((config_root() / "bench" / "latency.yaml").read_text())
    data["policies"][0]["remedies"].append("teleport")
    path = tmp_path / "latency.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"latency.yaml: policies: videovla: remedies \['teleport'\]"):
        LatencyBench.load(path)


def command(stamp, value, chunk, hold=""):
    return (stamp, [value, 0.0, 0.0, -1.0], chunk, 0, 1, hold, 0)


def test_executor_figures_split_episodes_count_starvation_after_the_first_chunk_and_score_boundaries():
    dt = 0.0125
    # episode 1: two startup holds, chunk 1 (a smooth ramp), two starved holds, chunk 2 jumping away
    ep1 = [command(0.0, 0.0, -1, "waiting for chunk"), command(dt, 0.0, -1, "waiting for chunk")]
    ep1 += [command((2 + i) * dt, 0.1 * i, 1) for i in range(5)]
    ep1 += [command(7 * dt, 0.0, -1, "waiting for chunk"), command(8 * dt, 0.0, -1, "chunk starts later")]
    ep1 += [command((9 + i) * dt, 0.9 - 0.1 * i, 2) for i in range(4)]
    ep1 += [command((13 + i) * dt, 0.5, 3 if i % 2 else 2) for i in range(4)]
    # episode 2 (after a retried reset of the same id): no starvation
    ep2 = [command(1.0 + i * dt, 0.2, 4) for i in range(6)]
    stats = {"resets": [(0.0, "a"), (1.0, "b"), (1.0, "b")], "commands": ep1 + ep2}
    figures = executor_figures(stats, [{}, {}], dt, "ee_delta")
    assert [f["starved_ticks"] for f in figures] == [2, 0]
    assert [f["executed"] for f in figures] == [13, 6]
    assert figures[0]["boundary_jerk_ratio"] > 1.0            # chunks 2 and 3 alternate: jumps at boundaries
    assert np.isnan(figures[1]["boundary_jerk_ratio"])        # one chunk: no boundary
    # an episode in which no chunk ever ran (each arrived with all its actions past): every hold starved
    never = [command(2.0 + i * dt, 0.0, -1, "waiting for chunk") for i in range(7)]
    figures = executor_figures({"resets": [(2.0, "c")], "commands": never}, [{}], dt, "ee_delta")
    assert figures[0]["starved_ticks"] == 7 and figures[0]["executed"] == 0


def test_paired_difference_counts_discordant_episodes():
    def cell(name, outcomes):
        return {"name": name, "per_episode": [{"task": "t", "seed": s, "success": o} for s, o in enumerate(outcomes)]}
    a = cell("a", [1, 1, 1, 1, 0, 1, 1, 1, 1, 1])
    b = cell("b", [0, 0, 0, 1, 0, 0, 1, 0, 0, 1])
    c = paired_difference(a, b)
    assert c["episodes"] == 10 and c["difference"] == pytest.approx(0.6)
    assert (c["only_a_succeeded"], c["only_b_succeeded"]) == (6, 0)
    assert c["mcnemar_p"] == pytest.approx(2 * 0.5 ** 6)
    assert c["ci95"][0] > 0 and c["ci95"][1] <= 1.0
    same = paired_difference(a, a)
    assert same["difference"] == 0 and same["mcnemar_p"] == 1.0


@pytest.mark.slow
def test_a_small_description_runs_through_the_graph(tmp_path):
    """Two delays, two modes, the scripted expert on one short episode each: cells, table and plot;
    the second run reads every cell from the cache."""
    import os

    from vla_policy_node.bench.latency import build_argparser, run

    os.environ["ROS_DOMAIN_ID"] = "68"
    description = {"protocol": {"graph": "sim_demo", "robot": "metaworld_sawyer", "tasks": ["button-press"],
                                "seeds": [100], "max_steps": 60, "lockstep": True, "early_window_s": 1.0,
                                "offline_stride": 8},
                   "short_seeds": [100], "delays": [0, 6],
                   "remedies": {"sync": {"executor.mode": "sync", "executor.merge": "replace"},
                                "async_replace": {"executor.mode": "async", "executor.merge": "replace"}},
                   "policies": [{"name": "oracle", "backend": "oracle", "checkpoint": "",
                                 "remedies": ["sync", "async_replace"], "full_delays": []}]}
    path = tmp_path / "latency.yaml"
    path.write_text(yaml.safe_dump(description))
    import argparse
    parser = argparse.ArgumentParser()
    build_argparser(parser)
    args = parser.parse_args(["--config", str(path), "--out", str(tmp_path / "bench"), "--no-free-running"])
    assert run(args) == 0
    result = json.loads((tmp_path / "bench" / "latency.json").read_text())
    cells = {c["name"]: c for c in result["cells"]}
    assert set(cells) == {"oracle-sync-d0", "oracle-sync-d6", "oracle-async_replace-d0", "oracle-async_replace-d6"}
    sync6, sync0 = cells["oracle-sync-d6"], cells["oracle-sync-d0"]
    # sync at d = 6 holds 6 steps for every chunk: it starves, and needs more steps than at d = 0
    assert sync6["starved_ticks_per_episode"] > 0 and sync0["starved_ticks_per_episode"] == 0
    assert sync6["measured_delay_steps"]["p50"] == pytest.approx(6, abs=0.51)
    assert sync0["measured_delay_steps"]["p50"] == pytest.approx(0, abs=0.51)
    assert all(c["episodes"] == 1 for c in cells.values())
    assert sync6["per_episode"][0]["steps"] > sync0["per_episode"][0]["steps"] or not sync6["successes"]
    md = (tmp_path / "bench" / "latency.md").read_text()
    assert "d = 6 (75 ms)" in md and (tmp_path / "bench" / "latency.png").is_file()
    assert run(args) == 0                                     # every cell from the cache
    assert json.loads((tmp_path / "bench" / "latency.json").read_text())["cells"] == result["cells"]
