"""vla-train on a tiny episode recorded through the graph: the loss falls, the checkpoint serves,
a resumed run continues from its saved step, and a second stage starts from a finished checkpoint."""

import json

import numpy as np
import pytest
from conftest import assert_checkpoint_serves, record_episodes

from vla_policy_node.train import main as train_main

pytestmark = pytest.mark.slow      # records episodes through the graph, then trains

TINY = ["--hidden-size", "32", "--num-layers", "2", "--image-size", "32", "--batch-size", "16",
        "--vae-steps", "30", "--lr", "2e-3", "--include-failed", "--save-every", "100000"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    record_episodes(out, 71, "[drawer-open]", "[2]", 40)
    return out


def test_training_lowers_loss_and_checkpoint_serves(recorded, tmp_path):
    ckpt = tmp_path / "ckpt"
    assert train_main(["--data", str(recorded), "--output", str(ckpt), "--steps", "300", *TINY]) == 0
    log = json.loads((ckpt / "training_log.json").read_text())
    first, last = log[0]["action_loss"], np.mean([r["action_loss"] for r in log[-2:]])
    assert last < 0.6 * first, (first, last)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["backend"] == "videovla" and config["training"]["steps"] == 300
    norm = json.loads((ckpt / "normalization.json").read_text())
    assert norm["mode"] == "quantile" and len(norm["action"]["q01"]) == 4
    assert_checkpoint_serves(ckpt, recorded)


def test_resume_continues_from_saved_step(recorded, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = ["--data", str(recorded), "--output", str(ckpt), *TINY, "--save-every", "50"]
    train_main([*args, "--steps", "60"])
    assert json.loads((ckpt / "config.json").read_text())["training"]["steps"] == 60
    first_log = json.loads((ckpt / "training_log.json").read_text())
    train_main([*args, "--steps", "160", "--resume"])
    training = json.loads((ckpt / "config.json").read_text())["training"]
    assert training["steps"] == 160 and training["final"]
    steps = [r["step"] for r in json.loads((ckpt / "training_log.json").read_text())]
    assert steps == [r["step"] for r in first_log] + [100, 150]      # continued, not restarted


def test_init_from_starts_a_second_stage_from_the_source_network(recorded, tmp_path):
    import torch
    from safetensors.torch import load_file

    source, second = tmp_path / "stage1", tmp_path / "stage2"
    args = ["--data", str(recorded), *TINY]
    train_main([*args, "--output", str(source), "--steps", "60"])
    # learning rate 0: the second stage's exported network must be the source's, bit for bit
    train_main([*args, "--output", str(second), "--steps", "10", "--lr", "0.0", "--init-from", str(source)])
    weights = [load_file(d / "transformer" / "diffusion_pytorch_model.safetensors") for d in (source, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    configs = [json.loads((d / "config.json").read_text()) for d in (source, second)]
    assert configs[1]["vae"]["scaling_factor"] == configs[0]["vae"]["scaling_factor"]
    training = configs[1]["training"]
    assert training["steps"] == 10 and training["init_steps"] == 60 and training["init_from"] == str(source)
    assert training["init_wall_time_s"] == configs[0]["training"]["wall_time_s"]
    # a network of another size is refused, naming the key
    with pytest.raises(SystemExit, match=r"policy\.hidden_size is 32, this run builds 48"):
        train_main([*args, "--output", str(tmp_path / "c"), "--steps", "1", "--hidden-size", "48",
                    "--init-from", str(source)])
    with pytest.raises(SystemExit, match="not a checkpoint directory"):
        train_main([*args, "--output", str(tmp_path / "c"), "--steps", "1", "--init-from", str(tmp_path)])


def test_no_data_is_a_clear_error(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"episodes": [], "summary": {}}))
    with pytest.raises(SystemExit, match="no usable episodes"):
        train_main(["--data", str(tmp_path), "--output", str(tmp_path / "c"), "--steps", "1"])


def test_k_shot_options_read_demonstrations_and_action_free_videos(recorded, tmp_path):
    """--data-seeds keeps the K demonstrations asked for; --videos adds action-free episodes that a
    video-objective family learns from, that an IDM can label (--label-videos idm), and that a family
    without a video objective refuses unlabelled; the training record counts both kinds."""
    args = ["--data", str(recorded), *TINY, "--steps", "10", "--vae-steps", "5"]
    with pytest.raises(SystemExit, match="with seeds 9"):
        train_main([*args, "--output", str(tmp_path / "none"), "--data-seeds", "9"])
    with pytest.raises(SystemExit, match="--data-seeds: 'x' is not a seed"):
        train_main([*args, "--output", str(tmp_path / "none"), "--data-seeds", "x"])
    kv = tmp_path / "videovla_kv"
    assert train_main([*args, "--output", str(kv), "--data-seeds", "2", "--videos", str(recorded),
                       "--labelled-share", "0.5"]) == 0
    training = json.loads((kv / "config.json").read_text())["training"]
    assert training["demonstrations_per_task"] == {"drawer-open": 1}
    assert training["videos_per_task"] == {"drawer-open": 1} and training["video_actions"] == "none"
    assert training["labelled_share"] == 0.5
    idm = tmp_path / "bc_idm"
    assert train_main([*args, "--family", "bc", "--output", str(idm), "--videos", str(recorded),
                       "--label-videos", "idm", "--idm-steps", "50"]) == 0
    training = json.loads((idm / "config.json").read_text())["training"]
    assert training["videos_per_task"] == {"drawer-open": 1} and training["video_actions"] == "inverse_dynamics"
    assert training["inverse_dynamics"]["config"]["steps"] == 50 and training["inverse_dynamics"]["fit_error"]["mae"] > 0
    with pytest.raises(SystemExit, match="--family lingbot_va cannot learn from action-free --videos"):
        train_main(["--family", "lingbot_va", "--data", str(recorded), "--output", str(tmp_path / "l"),
                    "--videos", str(recorded), "--steps", "1", "--include-failed"])
