"""Real-time chunking: the executor's plan lines up with the new chunk at the observation's capture time."""

import numpy as np
import pytest

from vla_policy_node.core.rtc_prefix import align_prefix

DT = 0.0125
START = 42.0
ROWS = np.arange(10, dtype=np.float64).reshape(5, 2)      # row j: the plan for START + j * DT


def test_observation_at_the_prefix_start_keeps_every_row():
    np.testing.assert_array_equal(align_prefix(START, ROWS, START, DT), ROWS)


@pytest.mark.parametrize("periods, first_row", [(1, 1), (2, 2), (2.4, 2), (2.6, 3), (4, 4)])
def test_newer_observation_drops_the_rows_already_past(periods, first_row):
    aligned = align_prefix(START, ROWS, START + periods * DT, DT)
    np.testing.assert_array_equal(aligned, ROWS[first_row:])     # row 0 is for the new chunk's action 0


def test_observation_older_than_the_prefix_start_gets_no_prefix():
    assert align_prefix(START, ROWS, START - DT, DT) is None
    assert align_prefix(START, ROWS, START - 3 * DT, DT) is None
    np.testing.assert_array_equal(align_prefix(START, ROWS, START - 0.4 * DT, DT), ROWS)   # rounds to 0


@pytest.mark.parametrize("periods", [5, 7])
def test_observation_after_the_whole_plan_gets_no_prefix(periods):
    assert align_prefix(START, ROWS, START + periods * DT, DT) is None


def test_empty_plan_gives_no_prefix():
    assert align_prefix(START, np.zeros((0, 2)), START, DT) is None
