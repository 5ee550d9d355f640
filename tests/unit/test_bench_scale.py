"""The scale benchmark's pure helpers: histogram quantiles, metric deltas, /proc CPU."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from agentproc import parse_metrics
from bench_heartbeats import stat_cpu
from bench_scale import histogram, histogram_delta, histogram_quantile, metric, split_evenly

INF = math.inf


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    """Given 100 observations, 50 at most 0.01 and 50 in (0.01, 0.1], Expect the median at
    the first bucket's bound and p99 near the second's, as Prometheus computes them."""
    buckets = [(0.01, 50.0), (0.1, 100.0), (INF, 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(buckets, 0.99) == pytest.approx(0.01 + 0.09 * 49 / 50)
    assert histogram_quantile(buckets, 0.25) == pytest.approx(0.005)  # from 0 in the first


def test_a_rank_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    buckets = [(0.5, 1.0), (1.0, 1.0), (INF, 10.0)]
    assert histogram_quantile(buckets, 0.99) == 1.0


def test_no_observations_have_no_quantile() -> None:
    assert histogram_quantile([(0.1, 0.0), (INF, 0.0)], 0.5) is None
    assert histogram_quantile([], 0.5) is None


def test_empty_buckets_before_the_rank_are_skipped() -> None:
    """Given nothing below 0.1 and everything in (0.1, 0.2], Expect quantiles inside it."""
    buckets = [(0.05, 0.0), (0.1, 0.0), (0.2, 4.0), (INF, 4.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.15)


TEXT_BEFORE = """\
# TYPE robeing_heartbeat_receive_seconds histogram
robeing_heartbeat_receive_seconds_bucket{le="0.01"} 5.0
robeing_heartbeat_receive_seconds_bucket{le="0.1"} 7.0
robeing_heartbeat_receive_seconds_bucket{le="+Inf"} 8.0
robeing_heartbeat_receive_seconds_count 8.0
robeing_heartbeat_receive_seconds_sum 0.5
# TYPE robeing_coordinator_events counter
robeing_coordinator_events_total{kind="assigned"} 3.0
"""
TEXT_AFTER = TEXT_BEFORE.replace("} 5.0", "} 105.0").replace("} 7.0", "} 207.0")
TEXT_AFTER = TEXT_AFTER.replace('le="+Inf"} 8.0', 'le="+Inf"} 208.0')


def test_a_window_is_the_difference_of_two_scrapes() -> None:
    """Given two scrapes 100 + 100 observations apart, Expect the window's buckets alone."""
    name = "robeing_heartbeat_receive_seconds"
    before, after = parse_metrics(TEXT_BEFORE), parse_metrics(TEXT_AFTER)
    assert histogram(before, name) == [(0.01, 5.0), (0.1, 7.0), (INF, 8.0)]
    window = histogram_delta(histogram(before, name), histogram(after, name))
    assert window == [(0.01, 100.0), (0.1, 200.0), (INF, 200.0)]
    assert histogram_quantile(window, 0.5) == pytest.approx(0.01)
    assert metric(after, "robeing_coordinator_events_total", kind="assigned") == 3.0
    assert metric(after, "robeing_coordinator_events_total", kind="nosuch") == 0.0


def test_cpu_is_read_past_a_command_name_with_spaces_and_parentheses() -> None:
    """Given a /proc stat line whose command is ``(a) b)``, Expect utime + stime / CLK_TCK."""
    rest = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    stat = "4242 (a) b) " + " ".join(rest)
    assert stat_cpu(stat, 100) == pytest.approx(3.0)


def test_agents_are_split_evenly_over_simulators() -> None:
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(10_000, 4) == [2500] * 4
    assert sum(split_evenly(1001, 7)) == 1001
