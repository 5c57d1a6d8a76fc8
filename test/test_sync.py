"""The built-in synchronisers follow message_filters' exact and approximate time rules."""

import math

from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image

from stereo_adapt_ros.ros.sync import ApproximateTimeSync, ExactTimeSync, StreamMonitor


def msg(ns, kind=Image, tag=""):
    message = kind()
    message.header.stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
    message.header.frame_id = tag
    return message


def collect():
    sets = []
    return sets, lambda *messages: sets.append([m.header.frame_id for m in messages])


def test_exact_sync_pairs_equal_stamps_only_in_any_arrival_order():
    sets, callback = collect()
    sync = ExactTimeSync(3, queue_size=5, callback=callback)
    sync.add(0, msg(100, tag="a0"))
    sync.add(1, msg(101, tag="b1"))
    sync.add(2, msg(100, CameraInfo, tag="c0"))
    assert sets == []
    sync.add(1, msg(100, tag="b0"))
    assert sets == [["a0", "b0", "c0"]]
    sync.add(0, msg(101, tag="a1"))
    sync.add(2, msg(101, CameraInfo, tag="c1"))
    assert sets[-1] == ["a1", "b1", "c1"] and len(sets) == 2


def test_exact_sync_keeps_at_most_queue_size_stamps_per_input():
    sets, callback = collect()
    sync = ExactTimeSync(2, queue_size=2, callback=callback)
    for ns in (1, 2, 3):
        sync.add(0, msg(ns, tag=f"l{ns}"))
    sync.add(1, msg(1, tag="r1"))  # stamp 1 was pushed out of input 0's queue
    sync.add(1, msg(3, tag="r3"))
    assert sets == [["l3", "r3"]]


def test_approximate_sync_matches_within_the_slop_closest_first():
    sets, callback = collect()
    sync = ApproximateTimeSync(2, queue_size=10, slop=0.01, callback=callback)
    sync.add(0, msg(1_000_000_000, tag="l"))
    sync.add(1, msg(1_020_000_000, tag="far"))  # 20 ms: beyond the slop
    assert sets == []
    sync.add(1, msg(1_004_000_000, tag="near"))
    assert sets == [["l", "near"]]
    sync.add(0, msg(1_018_000_000, tag="l2"))  # 2 ms from "far", still queued
    assert sets[-1] == ["l2", "far"]


def test_approximate_sync_with_zero_slop_is_exact():
    sets, callback = collect()
    sync = ApproximateTimeSync(2, queue_size=10, slop=0.0, callback=callback)
    sync.add(0, msg(5, tag="l"))
    sync.add(1, msg(6, tag="r6"))
    sync.add(1, msg(5, tag="r5"))
    assert sets == [["l", "r5"]]


def test_approximate_sync_with_an_infinite_slop_pairs_the_nearest_stamps():
    """What the node's approximate_sync_tolerance_seconds 0 (unbounded) builds."""
    sets, callback = collect()
    sync = ApproximateTimeSync(2, queue_size=10, slop=math.inf, callback=callback)
    sync.add(0, msg(1_000_000_000, tag="l"))
    sync.add(1, msg(4_000_000_000, tag="r4"))  # 3 s apart: paired all the same
    assert sets == [["l", "r4"]]
    sync.add(1, msg(9_000_000_000, tag="r9"))
    sync.add(1, msg(6_000_000_000, tag="r6"))
    sync.add(0, msg(6_500_000_000, tag="l2"))  # the nearest of the queued ones
    assert sets[-1] == ["l2", "r6"]


def test_monitor_explains_silent_topics_and_stamp_gaps():
    monitor = StreamMonitor(["/left", "/right"])
    monitor.record(0, msg(2_000_000_000))
    text = monitor.explain(approximate=False, slop=0.0)
    assert "no message received yet on /right" in text and "received on: /left" in text
    monitor.record(1, msg(3_500_000_000))
    text = monitor.explain(approximate=True, slop=0.05)
    assert "1.500000 s apart" in text and "within 0.05 s" in text
    assert monitor.stalled(0.0) and not monitor.stalled(0.0)  # once per new messages
    monitor.paired()
    monitor.record(0, msg(4_000_000_000))
    assert not monitor.stalled(60.0)
