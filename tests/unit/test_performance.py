"""Specification of robeing.protocol.performance: learned, decaying agent scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.protocol.errors import ConfigError
from robeing.protocol.performance import PerformanceConfig, PerformanceTracker


@pytest.fixture
def make_tracker() -> Callable[..., PerformanceTracker]:
    def make(**config: Any) -> PerformanceTracker:
        return PerformanceTracker(PerformanceConfig(**config))

    return make


@pytest.fixture
def tracker(make_tracker: Callable[..., PerformanceTracker]) -> PerformanceTracker:
    return make_tracker(half_life=100.0)


def test_unknown_agent_gets_the_neutral_prior(tracker: PerformanceTracker) -> None:
    """Given no history, Expect 0.5 (and the configured prior when it differs)."""
    assert tracker.score("new") == 0.5
    assert PerformanceTracker(PerformanceConfig(prior=0.3)).score("new", now=5) == 0.3
    assert "new" not in tracker and len(tracker) == 0


def test_successes_raise_and_failures_lower_the_score(tracker: PerformanceTracker) -> None:
    """Given one agent that succeeds and one that fails, Expect scores above and below 0.5,
    moving further with more evidence."""
    tracker.record("good", now=0, success=True)
    tracker.record("bad", now=0, success=False)
    one_good, one_bad = tracker.score("good", now=0), tracker.score("bad", now=0)
    assert one_bad < 0.5 < one_good
    for _ in range(10):
        tracker.record("good", now=0, success=True)
        tracker.record("bad", now=0, success=False)
    assert tracker.score("bad", now=0) < one_bad and tracker.score("good", now=0) > one_good


def test_smoothing_keeps_one_lucky_success_modest(tracker: PerformanceTracker) -> None:
    """Given a single success (prior weight 2), Expect a success rate of (1 + 1) / 3."""
    tracker.record("a", now=0, success=True)
    assert tracker.snapshot("a", now=0).success_rate == pytest.approx(2 / 3)


def test_observations_halve_in_weight_every_half_life(tracker: PerformanceTracker) -> None:
    """Given 4 outcomes at t=0 and a half-life of 100 s, Expect 2 effective samples at t=100
    and 1 at t=200."""
    for _ in range(4):
        tracker.record("a", now=0, success=True)
    assert tracker.snapshot("a", now=100).samples == pytest.approx(2)
    assert tracker.snapshot("a", now=200).samples == pytest.approx(1)


def test_old_evidence_fades_back_to_the_prior(tracker: PerformanceTracker) -> None:
    """Given many failures at t=0, When 50 half-lives pass without news, Expect about 0.5."""
    for _ in range(20):
        tracker.record("a", now=0, success=False)
    assert tracker.score("a", now=5000) == pytest.approx(0.5, abs=1e-6)


def test_recent_behaviour_outweighs_old_behaviour(tracker: PerformanceTracker) -> None:
    """Given 10 failures long ago and 5 successes now, Expect a score above neutral."""
    for _ in range(10):
        tracker.record("a", now=0, success=False)
    for _ in range(5):
        tracker.record("a", now=1000, success=True)
    assert tracker.score("a", now=1000) > 0.5


def test_faster_agents_score_higher(tracker: PerformanceTracker) -> None:
    """Given two always-successful agents at 0.1 s and 10 s, Expect the fast one higher, and
    the mean latency reported."""
    for _ in range(5):
        tracker.record("fast", now=0, success=True, latency=0.1)
        tracker.record("slow", now=0, success=True, latency=10.0)
    assert tracker.score("fast", now=0) > tracker.score("slow", now=0)
    assert tracker.snapshot("slow", now=0).mean_latency == pytest.approx(10.0)
    assert tracker.snapshot("fast", now=9).score == pytest.approx(tracker.score("fast", now=9))


def test_missed_deadlines_lower_the_score(tracker: PerformanceTracker) -> None:
    """Given two agents equal but for deadlines met or missed, Expect the punctual one higher;
    outcomes without a deadline leave the deadline rate at the prior."""
    for _ in range(5):
        tracker.record("on_time", now=0, success=True, deadline_met=True)
        tracker.record("late", now=0, success=True, deadline_met=False)
        tracker.record("none", now=0, success=True)
    assert tracker.score("on_time", now=0) > tracker.score("late", now=0)
    assert tracker.snapshot("none", now=0).deadline_rate == 0.5


def test_out_of_order_outcomes_do_not_inflate_history(tracker: PerformanceTracker) -> None:
    """Given an outcome at t=100 then one reported for t=50, Expect no negative decay: two
    full samples at t=100."""
    tracker.record("a", now=100, success=True)
    tracker.record("a", now=50, success=True)
    assert tracker.snapshot("a", now=100).samples == pytest.approx(2)


def test_forget_drops_history(tracker: PerformanceTracker) -> None:
    """Given history for an agent, When forgotten, Expect the prior again."""
    tracker.record("a", now=0, success=False)
    tracker.forget("a")
    assert tracker.score("a") == 0.5
    with pytest.raises(KeyError):
        tracker.snapshot("a")


@pytest.mark.parametrize(
    "config",
    [
        {"half_life": 0},
        {"prior": 1.5},
        {"prior_weight": 0},
        {"reference_latency": 0},
        {"success_weight": -1},
        {"success_weight": 0, "deadline_weight": 0, "latency_weight": 0},
    ],
)
def test_invalid_config_is_rejected(config: dict[str, float]) -> None:
    """Given nonsensical tuning, Expect ConfigError."""
    with pytest.raises(ConfigError):
        PerformanceConfig(**config)


def test_negative_latency_is_rejected(tracker: PerformanceTracker) -> None:
    """Given a negative latency, Expect ConfigError."""
    with pytest.raises(ConfigError):
        tracker.record("a", now=0, success=True, latency=-1)


outcomes = st.lists(
    st.tuples(
        st.floats(0, 1e4),
        st.booleans(),
        st.none() | st.floats(0, 1e3),
        st.none() | st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(outcomes, st.floats(0, 1e5), st.floats(1, 1e4))
def test_property_score_stays_within_bounds(
    history: list[tuple[float, bool, float | None, bool | None]], later: float, half_life: float
) -> None:
    """Given any history of outcomes at any times, Expect the score within [0, 1] at any time,
    all successes never below neutral and all failures never above it."""
    tracker = PerformanceTracker(PerformanceConfig(half_life=half_life))
    for now, success, latency, met in history:
        tracker.record("a", now=now, success=success, latency=latency, deadline_met=met)
        tracker.record("ok", now=now, success=True, latency=0.0, deadline_met=True)
        tracker.record("ko", now=now, success=False, deadline_met=False)
    assert 0.0 <= tracker.score("a", now=later) <= 1.0
    assert tracker.score("ok", now=later) >= 0.5 - 1e-12
    assert tracker.score("ko", now=later) <= 0.5 + 1e-12
