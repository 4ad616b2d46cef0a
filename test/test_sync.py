from vla_policy_node.core.sync import TimeSynchronizer


def make():
    return TimeSynchronizer(["camera:a", "ee"], tolerance_s=0.01, max_age_s=0.5)


def test_emits_when_all_streams_within_tolerance():
    s = make()
    s.add_anchor(1.0, "js1")
    s.add("camera:a", 1.004, "img")
    assert s.poll(1.0) is None           # ee pose still missing
    s.add("ee", 1.0, "pose")
    out = s.poll(1.0)
    assert out.stamp == 1.0 and out.anchor == "js1"
    assert out.streams == {"camera:a": "img", "ee": "pose"}
    assert abs(out.stream_stamps["camera:a"] - 1.004) < 1e-12


def test_out_of_tolerance_camera_is_not_used():
    s = make()
    s.add_anchor(1.0, "js")
    s.add("ee", 1.0, "pose")
    s.add("camera:a", 1.05, "late frame")
    assert s.poll(1.0) is None


def test_overtaken_anchor_counted_unsynchronized():
    s = make()
    s.add_anchor(1.8, "old")
    s.add_anchor(2.0, "new")
    s.add("camera:a", 2.0, "img")
    s.add("ee", 2.0, "pose")
    out = s.poll(2.0)
    assert out.anchor == "new"
    assert s.counters.dropped_unsynchronized == 1
    s.add_anchor(1.9, "late")             # older than what was emitted
    assert s.counters.late_samples == 1


def test_stale_anchor_dropped():
    s = make()
    s.add_anchor(1.0, "js")
    assert s.poll(2.0) is None
    assert s.counters.dropped_stale == 1


def test_republished_state_is_assembled_again():
    s = make()
    for _ in range(2):
        s.add_anchor(1.0, "js")
        s.add("camera:a", 1.0, "img")
        s.add("ee", 1.0, "pose")
        assert s.poll(1.0).stamp == 1.0
    assert s.counters.emitted == 2


def test_clock_going_back_starts_synchronization_over():
    s = make()
    s.add_anchor(10.0, "js")
    s.add("camera:a", 10.0, "img")
    s.add("ee", 10.0, "pose")
    assert s.poll(10.0).stamp == 10.0
    s.add_anchor(9.99, "reordered", now=10.0)             # merely late: dropped, no new timeline
    assert s.counters.late_samples == 1 and s.counters.clock_jumps_back == 0
    s.add_anchor(5.0, "js after the jump", now=5.0)      # fresh on the clock, far older than the last
    s.add("camera:a", 5.0, "img")
    s.add("ee", 5.0, "pose")
    out = s.poll(5.0)
    assert out is not None and out.anchor == "js after the jump" and s.counters.clock_jumps_back == 1
