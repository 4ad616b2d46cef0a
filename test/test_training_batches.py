"""--batch-size is the global batch per optimizer step: how it splits over processes and accumulated
micro-batches, and the error when it does not."""

import pytest

from vla_policy_node.models.components.training import micro_batch_size
from vla_policy_node.train import main as train_main


def test_the_global_batch_splits_over_processes_and_micro_batches():
    assert micro_batch_size(32, 1, 1) == 32
    assert micro_batch_size(32, 2, 1) == 16
    assert micro_batch_size(32, 2, 4) == 4


def test_a_batch_that_does_not_split_is_refused_naming_the_options():
    with pytest.raises(ValueError, match=r"^--batch-size 12 does not split over 2 process\(es\) x "
                                         r"--gradient-accumulation-steps 4: use a multiple of 8$"):
        micro_batch_size(12, 2, 4)
    with pytest.raises(ValueError, match="--gradient-accumulation-steps must be at least 1, not 0"):
        micro_batch_size(12, 1, 0)


def test_vla_train_refuses_it_before_reading_data(tmp_path):
    with pytest.raises(SystemExit, match=r"vla-train: --batch-size 10 does not split over 1 process\(es\) x "
                                         r"--gradient-accumulation-steps 4: use a multiple of 4"):
        train_main(["--data", str(tmp_path / "none"), "--output", str(tmp_path / "ckpt"), "--batch-size", "10",
                    "--gradient-accumulation-steps", "4"])
    assert not (tmp_path / "ckpt").exists()
