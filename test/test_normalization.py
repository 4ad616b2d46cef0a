import numpy as np
import pytest

from vla_policy_node.core.normalization import Normalizer


@pytest.mark.parametrize("mode,stats", [
    ("quantile", {"q01": [-2.0, 0.0, 10.0], "q99": [2.0, 1.0, 30.0]}),
    ("min_max", {"min": [-2.0, 0.0, 10.0], "max": [2.0, 1.0, 30.0]}),
    ("mean_std", {"mean": [0.5, -1.0, 3.0], "std": [2.0, 0.1, 4.0]}),
])
def test_round_trip(mode, stats):
    norm = Normalizer(mode, stats)
    rng = np.random.default_rng(0)
    x = rng.uniform([-1.5, 0.1, 12.0], [1.5, 0.9, 28.0], size=(16, 3))
    y = norm.normalize(x)
    np.testing.assert_allclose(norm.unnormalize(y), x, atol=1e-12)


def test_quantile_maps_to_unit_interval_and_clips():
    norm = Normalizer("quantile", {"q01": [0.0], "q99": [4.0]})
    np.testing.assert_allclose(norm.normalize([[0.0], [2.0], [4.0], [9.0]]).ravel(), [-1.0, 0.0, 1.0, 1.0])


def test_per_timestep_statistics():
    q01 = np.array([[0.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    q99 = np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0]])
    norm = Normalizer("quantile", {"q01": q01, "q99": q99})
    y = norm.normalize(np.array([[1.0, 0.5], [1.0, 1.0], [0.0, 0.0]]))
    np.testing.assert_allclose(y, [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="cover 3 steps"):
        norm.normalize(np.zeros((4, 2)))


def test_missing_statistics_fail_loudly():
    with pytest.raises(ValueError, match=r"missing \['q99'\]"):
        Normalizer("quantile", {"q01": [0.0]})
    with pytest.raises(ValueError, match="unknown"):
        Normalizer("zscore", {"mean": [0.0], "std": [1.0]})


def test_wrong_dimension_rejected():
    norm = Normalizer("quantile", {"q01": [0.0, 0.0], "q99": [1.0, 1.0]})
    with pytest.raises(ValueError, match="last dimension 2"):
        norm.normalize(np.zeros((5, 3)))
