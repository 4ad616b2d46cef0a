"""vla-train data-parallel on two CPU processes (torchrun, gloo): the main process alone writes a
checkpoint that serves, its record names the processes, and the loss falls as it does in one
process at the same global batch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, assert_checkpoint_serves, record_episodes
from test_training import TINY


pytestmark = pytest.mark.slow      # records episodes through the graph, then trains twice

# a larger global batch than TINY's 16 keeps the logged loss steady enough to compare two runs
RUN = [*TINY, "--batch-size", "64", "--steps", "500"]
LAST = 5                           # logged points (every 50 steps) averaged at the end of each run
TOLERANCE = 0.5                    # relative; seeds of one configuration differ by about 20-30 %


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    record_episodes(out, 77, "[drawer-open]", "[2]", 40)
    return out


def vla_train(launcher: list[str], ckpt, *args: str) -> str:
    """Run `python [launcher] -m vla_policy_node.train` with one thread per process; its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *launcher, "-m", "vla_policy_node.train", "--output", str(ckpt), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def two_processes(recorded, tmp_path_factory):
    """2 processes x 2 accumulated micro-batches of 16 = the global batch of 64; (checkpoint, stdout)."""
    ckpt = tmp_path_factory.mktemp("two") / "ckpt"
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return ckpt, vla_train(torchrun, ckpt, "--data", str(recorded), *RUN, "--gradient-accumulation-steps", "2")


@pytest.fixture(scope="module")
def one_process(recorded, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("one") / "ckpt"
    vla_train([], ckpt, "--data", str(recorded), *RUN)
    return ckpt


def files(ckpt) -> list[str]:
    return sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*"))


def test_two_processes_write_one_checkpoint_that_serves(two_processes, one_process, recorded):
    ckpt, stdout = two_processes
    training = json.loads((ckpt / "config.json").read_text())["training"]
    assert (training["num_processes"], training["gradient_accumulation_steps"]) == (2, 2)
    assert (training["batch_size"], training["per_process_batch_size"], training["steps"]) == (64, 16, 500)
    assert files(ckpt) == files(one_process)                  # one set of files, as one process writes
    assert stdout.count("checkpoint written to") == 1 and stdout.count("dataset:") == 1
    assert_checkpoint_serves(ckpt, recorded)


def test_two_processes_lower_the_loss_as_one_process_does(two_processes, one_process):
    curves = {}
    for name, ckpt in (("two", two_processes[0]), ("one", one_process)):
        log = json.loads((ckpt / "training_log.json").read_text())
        curves[name] = log[0]["action_loss"], np.mean([r["action_loss"] for r in log[-LAST:]])
    print("action_loss first / mean of last", LAST, curves)
    for first, last in curves.values():
        assert last < 0.6 * first, curves
    (_, two), (_, one) = curves["two"], curves["one"]
    assert abs(two - one) <= TOLERANCE * one, curves
