"""Which seeds a closed-loop evaluation runs, training seeds refused / warned / allowed, and how
report.json describes the protocol."""

import pytest

from vla_policy_node.core.progress import StageThresholds
from vla_policy_node.core.protocol import check_training_seeds, resolve_seeds
from vla_policy_node.evaluation.closed_loop_report import EvaluationProtocol, protocol_section


@pytest.mark.parametrize("seeds, per_task, expected", [
    ([100, 101, 102], 0, [100, 101, 102]),        # 0: one episode per listed seed
    ([100, 101, 102], 2, [100, 101]),             # the first N listed
    ([105, 101], 4, [105, 101, 106, 107]),        # extended after the largest
    ([], 2, [100, 101]),
])
def test_resolve_seeds_with_episodes_per_task(seeds, per_task, expected):
    assert resolve_seeds(seeds, per_task) == expected


@pytest.mark.parametrize("seeds, per_task, error", [
    ([100], -1, "episodes_per_task: -1 must be >= 0"),
    ([100, 100], 0, "seeds: \\[100, 100\\] repeats a seed"),
    ([], 0, "seeds: empty and episodes_per_task is 0"),
])
def test_resolve_seeds_errors_name_the_parameter(seeds, per_task, error):
    with pytest.raises(ValueError, match=f"parameter {error}"):
        resolve_seeds(seeds, per_task)


def test_training_seeds_refused_warned_or_allowed():
    seeds = [3, 100, 7]
    with pytest.raises(ValueError, match="\\[3, 7\\] are below min_eval_seed=100.*refused"):
        check_training_seeds(seeds, 100, "refuse")
    warning = check_training_seeds(seeds, 100, "warn")
    assert "[3, 7] are below min_eval_seed=100" in warning and "held_out=false" in warning
    assert check_training_seeds(seeds, 100, "allow") is None
    for policy in ("refuse", "warn", "allow"):
        assert check_training_seeds([100, 101], 100, policy) is None      # held out: nothing to say
    with pytest.raises(ValueError, match="training_seeds: 'maybe' unknown; use one of refuse, warn, allow"):
        check_training_seeds([100], 100, "maybe")


def protocol(**changes) -> EvaluationProtocol:
    values = dict(mode="closed_loop", lockstep=True, episode_timeout_s=90.0, tasks=["drawer-open"], seeds=[5, 100],
                  max_steps=300, min_eval_seed=100, training_seeds="warn", stage_progress=True,
                  stage_thresholds=StageThresholds())
    return EvaluationProtocol(**{**values, **changes})


def test_protocol_section_of_a_closed_loop_run():
    out = protocol_section(protocol(), {"sim_bridge": True, "executor": None})
    assert out == {"mode": "closed_loop", "time": "lockstep", "lockstep": True,
                   "lockstep_of_nodes": {"sim_bridge": True, "executor": None}, "episode_timeout_s": 90.0,
                   "tasks": ["drawer-open"], "seeds": [5, 100], "episodes_per_task": 2, "max_steps": 300,
                   "min_eval_seed": 100, "training_seeds": "warn", "training_seeds_used": [5], "held_out": False,
                   "progress": {"stages": ["approach", "contact", "complete"], "approach_radius_m": 0.12,
                                "approach_release_m": 0.15, "contact_displacement_m": 0.01,
                                "score": "mean over stages: 1 first try, 0.5 after a retry, 0 not reached"}}
    assert protocol_section(protocol(seeds=[100, 101]), {})["held_out"] is True


def test_protocol_section_of_a_replay_without_stages():
    out = protocol_section(protocol(mode="replay", lockstep=False, stage_progress=False), {})
    assert out["time"] == "free_running" and "seeds" not in out and "held_out" not in out
    assert out["progress"]["stages"] == [] and out["progress"]["score"] == "1 success, 0 failure"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="parameter mode: 'open_loop' unknown; use one of closed_loop, replay"):
        protocol(mode="open_loop")
