"""Evaluation metrics against values known in closed form."""

import math

import numpy as np
import pytest

from vla_policy_node.core.metrics import (action_errors, auroc, auroc_text, correlation, gripper_accuracy, psnr,
                                          ssim)


def _scene(size: int) -> np.ndarray:
    """A structured RGB uint8 frame (gradients and a square), not noise."""
    y, x = np.mgrid[0:size, 0:size]
    frame = np.stack([x * 255 // max(size - 1, 1), y * 255 // max(size - 1, 1), (x + y) * 127 // max(size - 1, 1)],
                     axis=-1).astype(np.uint8)
    frame[size // 4: size // 2, size // 4: size // 2] = (200, 30, 30)
    return frame


@pytest.mark.parametrize("size", [64, 8])
def test_identical_frames_give_infinite_psnr_and_unit_ssim(size):
    frame = _scene(size)
    assert psnr(frame, frame.copy()) == math.inf
    assert ssim(frame, frame.copy()) == pytest.approx(1.0)
    as_float = frame.astype(np.float64) / 255.0
    assert psnr(as_float, as_float) == math.inf
    assert ssim(as_float, as_float) == pytest.approx(1.0)


def test_psnr_of_a_known_error_is_the_analytic_value():
    base = np.full((64, 64, 3), 128, np.uint8)
    checker = (np.indices((64, 64)).sum(axis=0) % 2)[..., None]
    shifted = (base.astype(int) + np.where(checker, 10, -10)).astype(np.uint8)     # every pixel off by 10 levels
    assert psnr(base, shifted) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)      # 28.13 dB
    # uint8 and [0, 1] float inputs describe the same frames
    assert psnr(base / 255.0, shifted / 255.0) == pytest.approx(psnr(base, shifted), abs=1e-9)
    # Gaussian noise of sigma 0.05 (no clipping around mid-gray): PSNR ~ -20 log10(0.05) = 26.02 dB
    rng = np.random.default_rng(0)
    gray = np.full((128, 128, 3), 0.5)
    noisy = gray + rng.normal(0.0, 0.05, gray.shape)
    assert psnr(gray, noisy) == pytest.approx(-20 * math.log10(0.05), abs=0.05)


def test_ssim_falls_with_noise_and_works_on_tiny_frames():
    rng = np.random.default_rng(1)
    frame = _scene(64)
    values = []
    for sigma in (2, 10, 40):
        noisy = np.clip(frame + rng.normal(0, sigma, frame.shape), 0, 255).astype(np.uint8)
        values.append(ssim(frame, noisy))
    assert 1.0 > values[0] > values[1] > values[2] > 0.0
    tiny = _scene(8)
    assert -1.0 <= ssim(tiny, np.roll(tiny, 1, axis=1)) < 1.0
    assert -1.0 <= ssim(_scene(5), _scene(5)[::-1]) < 1.0                  # window shrinks to 5
    with pytest.raises(ValueError, match="too small"):
        ssim(_scene(2), _scene(2))
    with pytest.raises(ValueError, match="shape"):
        psnr(_scene(8), _scene(16))


def test_action_errors_of_a_sequence_shifted_by_one_step():
    # chunk n starts at step n of a ramp a_t[d] = 0.1 (d + 1) t; the prediction runs one step ahead
    n, horizon, dims = 5, 4, 4
    t = np.arange(n)[:, None] + np.arange(horizon)[None, :]
    slope = 0.1 * (np.arange(dims) + 1)
    target = t[..., None] * slope
    pred = (t + 1)[..., None] * slope
    mask = np.ones((n, horizon), bool)
    mask[-1, 2:] = False                       # padded steps past the recording ...
    pred[-1, 2:] = 1e3                         # ... carry garbage that must not count
    names = ["dx", "dy", "dz", "gripper"]
    err = action_errors(pred, target, mask, names)
    assert err["count"] == n * horizon - 2
    assert err["l1"] == pytest.approx(slope.mean())                           # 0.25
    assert err["l2"] == pytest.approx(math.sqrt((slope ** 2).mean()))         # sqrt(0.075)
    assert list(err["per_dim"]) == names
    for name, s in zip(names, slope):
        assert err["per_dim"][name]["l1"] == pytest.approx(s)
        assert err["per_dim"][name]["l2"] == pytest.approx(s)
    assert err["per_step"]["l1"] == pytest.approx([slope.mean()] * horizon)
    unmasked = action_errors(pred, target)
    assert unmasked["l1"] > 10 and list(unmasked["per_dim"]) == ["0", "1", "2", "3"]
    # a step no chunk reached is nan, not zero
    none_at_last = np.ones((n, horizon), bool)
    none_at_last[:, -1] = False
    assert math.isnan(action_errors(pred, target, none_at_last)["per_step"]["l1"][-1])
    with pytest.raises(ValueError, match="mask"):
        action_errors(pred, target, mask[:, :2])
    with pytest.raises(ValueError, match="names"):
        action_errors(pred, target, mask, names[:2])


def test_gripper_accuracy_counts_open_close_agreement():
    target = np.array([[[0, -1.0], [0, -1.0], [0, 1.0], [0, 1.0]]])
    pred = np.array([[[0, -0.2], [0, 0.3], [0, 0.9], [0, 0.1]]])
    assert gripper_accuracy(pred, target, index=1) == pytest.approx(0.75)
    assert gripper_accuracy(pred, target, index=1, threshold=0.5) == pytest.approx(0.75)   # 0.1 now "open"
    assert math.isnan(gripper_accuracy(np.zeros((0, 2)), np.zeros((0, 2)), index=1))


def test_auroc_of_perfect_inverted_and_one_class_rankings():
    labels = [0, 0, 0, 1, 1]                         # 1 = failure
    assert auroc([0.1, 0.2, 0.3, 0.8, 0.9], labels) == pytest.approx(1.0)
    assert auroc([0.9, 0.8, 0.7, 0.2, 0.1], labels) == pytest.approx(0.0)
    assert auroc([0.5] * 5, labels) == pytest.approx(0.5)
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_auroc_is_printed_only_where_both_classes_exist():
    assert auroc_text(auroc([0.1, 0.9, 0.8], [0, 1, 1]), failures=2, episodes=3) == "1.000"
    assert auroc_text(0.8125, failures=1, episodes=4, digits=2) == "0.81"
    # one class: no value, whatever was computed (an AUROC of successes alone means nothing)
    assert auroc_text(auroc([0.1] * 15, [0] * 15), failures=0, episodes=15) == \
        "n/a (one class: 15 successes, 0 failures)"
    assert auroc_text(1.0, failures=0, episodes=15) == "n/a (one class: 15 successes, 0 failures)"
    assert auroc_text(math.nan, failures=1, episodes=1) == "n/a (one class: 0 successes, 1 failure)"
    assert auroc_text(math.nan, failures=None, episodes=3) == "n/a (one class among 3 episodes)"
    assert auroc_text(None, failures=0, episodes=0) == "n/a (no episodes)"


def test_correlation_linear_and_monotonic():
    x = np.linspace(-1, 2, 20)
    lin = correlation(x, 2 * x + 1)
    assert lin["pearson"] == pytest.approx(1.0) and lin["spearman"] == pytest.approx(1.0) and lin["n"] == 20
    cubic = correlation(x, x ** 3)
    assert cubic["spearman"] == pytest.approx(1.0) and 0.8 < cubic["pearson"] < 1.0
    with_nan = correlation([1.0, 2.0, np.nan, 4.0, 5.0], [2.0, 4.0, 6.0, np.nan, 10.0])
    assert with_nan["n"] == 3 and with_nan["pearson"] == pytest.approx(1.0)
    assert math.isnan(correlation([1, 2], [3, 4])["pearson"])
