"""The Makefile's training recipes are what `make train`, `make train-kshot`, `make train-lingbot-history`
and the Qwen-VLA Panda stages run: each vla-train line must parse with its family's options, so a
renamed or mistyped option fails here, not an hour into a training run."""

import shlex
import subprocess
from pathlib import Path

import pytest

from vla_policy_node.train import build_argparser

ROOT = Path(__file__).resolve().parents[1]


def vla_train_lines(*targets: str) -> list[list[str]]:
    """The vla-train command lines `make -n TARGETS` would run, as argument lists."""
    out = subprocess.run(["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    commands = out.stdout.replace("\\\n", " ").splitlines()          # continued lines joined
    return [shlex.split(line.split("/bin/vla-train ", 1)[1]) for line in commands if "/bin/vla-train " in line]


@pytest.mark.parametrize("target, runs", [("train", 7), ("train-kshot", 3), ("train-lingbot-history", 2),
                                          ("train-qwen-vla-panda-reach", 1), ("train-qwen-vla-panda-relative", 1)])
def test_every_training_recipe_parses_with_its_family_options(target, runs):
    lines = vla_train_lines(target)
    assert len(lines) == runs
    for argv in lines:
        family = argv[argv.index("--family") + 1]
        args = build_argparser(family).parse_args(argv)
        assert args.output and args.data


def test_the_k_shot_recipe_trains_on_five_demonstrations_and_the_action_free_videos():
    bc, bc_idm, videovla = (build_argparser(a[a.index("--family") + 1]).parse_args(a)
                            for a in vla_train_lines("train-kshot"))
    assert {bc.data_seeds, bc_idm.data_seeds, videovla.data_seeds} == {"0-4"}
    assert bc.videos == [] and bc_idm.label_videos == "idm" and videovla.label_videos == "none"
    assert bc_idm.videos == videovla.videos == ["artifacts/data_video"]
    assert bc.steps == bc_idm.steps and videovla.init_from == bc.output     # the bc rows at one budget


def test_the_lingbot_history_recipe_differs_only_in_the_augmentation():
    augmented, continued = (build_argparser("lingbot_va").parse_args(a) for a in vla_train_lines("train-lingbot-history"))
    assert augmented.action_history_dropout > 0 and augmented.action_history_noise > 0
    assert continued.action_history_dropout == continued.action_history_noise == 0
    same = {k: v for k, v in vars(augmented).items() if not k.startswith("action_history") and k != "output"}
    assert same == {k: v for k, v in vars(continued).items() if not k.startswith("action_history") and k != "output"}
    assert augmented.init_from == "checkpoints/lingbot_va_metaworld"


def test_the_panda_reach_stages_continue_the_shipped_qwen_vla_on_200_targets():
    poses, motion = (build_argparser("qwen_vla").parse_args(vla_train_lines(t)[0])
                     for t in ("train-qwen-vla-panda-reach", "train-qwen-vla-panda-relative"))
    for args in (poses, motion):
        assert args.init_from == "checkpoints/qwen_vla_sawyer_panda" and args.proprio
        assert args.also == ["panda_ros2_control=artifacts/data_panda_reach"] and args.renormalize == ["panda_ros2_control"]
    assert poses.relative_actions == [] and motion.relative_actions == ["panda_ros2_control"]
