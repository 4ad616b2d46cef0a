"""scripts/panda_localization_probe.py: the keypoint head reads a feature map's peak at its image
coordinates (x right, y down, [-1, 1]); the rendered training set holds each seed's target as the sim
draws it, seen by the scene camera through the robot file's crop."""

import importlib.util

import numpy as np
import pytest
import torch
from conftest import ROOT

from vla_policy_node.sim.panda_reach_sim import PandaReachSim


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("panda_localization_probe",
                                                  ROOT / "scripts" / "panda_localization_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spatial_softmax_reads_the_peak_position(probe):
    features = torch.full((1, 2, 9, 17), -50.0)
    features[0, 0, 2, 16] = 50.0          # row 2 of 9, last column
    features[0, 1, 8, 0] = 50.0           # last row, first column
    x0, x1, y0, y1 = probe.SpatialSoftmax()(features)[0].tolist()
    assert (x0, y0) == pytest.approx((1.0, -0.5), abs=1e-3)
    assert (x1, y1) == pytest.approx((-1.0, 1.0), abs=1e-3)


def test_rendered_targets_are_the_sims_and_visible_in_the_scene_crop(probe):
    data = probe.render_targets([100, 101], poses=2, size=112)
    assert data["scene"].shape == (4, 112, 112, 3) and data["wrist"].shape == (4, 112, 112, 3)
    sim = PandaReachSim([])
    try:
        for i, seed in enumerate([100, 100, 101, 101]):
            np.testing.assert_allclose(data["target"][i], sim.reset("reach", seed).target, rtol=1e-6)
    finally:
        sim.close()
    assert not np.allclose(data["joints"][0], data["joints"][1])     # two start poses, one target
    red = (data["scene"][..., 0] > 150) & (data["scene"][..., 1] < 80) & (data["scene"][..., 2] < 80)
    assert red.reshape(4, -1).any(axis=1).all()                     # the target dot is inside every crop
