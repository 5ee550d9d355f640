"""Specification of the phi-accrual failure detector and the health monitor."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.protocol.errors import ConfigError
from robeing.protocol.failure_detector import DetectorConfig, Health, HealthMonitor, Transition
from robeing.protocol.phi import PhiAccrualDetector, phi, silence_at_phi

# Default config, derived by hand: a steady 1 s agent has mean 1 s and the
# std floor 0.1 s; phi = 8 is reached at y = 5.2256 standard deviations past
# mean + acceptable_pause, i.e. 1 + 3 + 0.52256 s; DEAD follows 5 s later.
STEADY_SUSPECT = 4.5226
STEADY_DEAD = 9.5226
# Right after joining, the bootstrap history has std = interval / 4 = 0.25 s.
FRESH_SUSPECT = 1 + 3 + 0.25 * 5.22560
TICK = 0.01


def beat_steadily(monitor: HealthMonitor, agent: str, start: float, count: int) -> float:
    """Send ``count`` beats one second apart, ticking between them; return the last time."""
    now = start
    for i in range(count):
        now = start + i
        assert monitor.heartbeat(agent, now) == ([] if i else monitor_join(agent, now))
        assert monitor.tick(now + 0.999) == []
    return now


def monitor_join(agent: str, now: float) -> list[Transition]:
    return [Transition(agent, None, Health.ALIVE, now, "joined")]


def first_time(monitor: HealthMonitor, start: float, stop: float, new: Health) -> float | None:
    """Tick every TICK seconds from ``start``; when does ``new`` first get reported?"""
    steps = round((stop - start) / TICK)
    for i in range(steps + 1):
        now = start + i * TICK
        if any(t.new is new for t in monitor.tick(now)):
            return now
    return None


def test_phi_inverse_agrees_with_phi() -> None:
    """Given thresholds, means and deviations, When silence_at_phi inverts phi,
    Expect phi at that silence to equal the threshold."""
    for threshold in (1.0, 3.0, 8.0, 16.0, 100.0):
        for mean, std in ((1.0, 0.1), (4.0, 0.5), (30.0, 7.0)):
            silence = silence_at_phi(threshold, mean, std)
            assert phi(silence, mean, std) == pytest.approx(threshold, rel=1e-9)
            assert phi(silence - 1e-6, mean, std) < threshold


def test_default_bounds_match_the_hand_derivation() -> None:
    """Given the default config, Expect its steady-state bounds to be 4.52 s and 9.52 s."""
    config = DetectorConfig()
    assert config.steady_suspect_silence() == pytest.approx(STEADY_SUSPECT, abs=1e-4)
    assert config.steady_dead_silence() == pytest.approx(STEADY_DEAD, abs=1e-4)


def test_steady_agent_is_never_suspected() -> None:
    """Given an agent beating every second for two hours, When the monitor ticks
    between beats, Expect no transition after the join."""
    monitor = HealthMonitor()
    beat_steadily(monitor, "a", 0.0, 7200)
    assert monitor.state("a") is Health.ALIVE


def test_crashed_agent_is_suspected_then_dead_within_the_computed_bounds() -> None:
    """Given a warmed-up steady agent, When it stops beating, Expect SUSPECTED
    4.52 s and DEAD 9.52 s after its last beat (within one tick)."""
    monitor = HealthMonitor()
    last = beat_steadily(monitor, "a", 0.0, 200)
    suspected = first_time(monitor, last, last + 20, Health.SUSPECTED)
    assert suspected is not None
    assert STEADY_SUSPECT <= suspected - last <= STEADY_SUSPECT + TICK + 1e-6
    dead = first_time(monitor, suspected, last + 20, Health.DEAD)
    assert dead is not None
    assert STEADY_DEAD <= dead - last <= STEADY_DEAD + TICK + 1e-6


def test_agent_crashing_right_after_joining_is_detected_within_bounds() -> None:
    """Given an agent that sent a single heartbeat, When it falls silent,
    Expect SUSPECTED after 1 + 3 + 0.25 * 5.2256 s and DEAD 5 s later."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 100.0)
    suspected = first_time(monitor, 100.0, 130.0, Health.SUSPECTED)
    assert suspected == pytest.approx(100.0 + FRESH_SUSPECT, abs=TICK)
    assert suspected is not None
    dead = first_time(monitor, suspected, 130.0, Health.DEAD)
    assert dead == pytest.approx(100.0 + FRESH_SUSPECT + 5.0, abs=TICK)


def test_a_coarse_tick_reports_suspicion_before_death() -> None:
    """Given a silent agent and a monitor that ticks only once, much later,
    Expect ALIVE -> SUSPECTED then SUSPECTED -> DEAD in that one tick."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0)
    moves = [(t.old, t.new) for t in monitor.tick(60.0)]
    assert moves == [(Health.ALIVE, Health.SUSPECTED), (Health.SUSPECTED, Health.DEAD)]


@settings(max_examples=60, deadline=None)
@given(
    jitter=st.lists(st.floats(-0.2, 0.2), min_size=5, max_size=200),
    pauses=st.lists(st.floats(0.0, 2.999), min_size=1, max_size=200),
    pause_every=st.integers(1, 20),
)
def test_pauses_shorter_than_acceptable_cause_no_false_suspicion(
    jitter: list[float], pauses: list[float], pause_every: int
) -> None:
    """Given beats 1 s +/- 20% apart, where every n-th gap also contains a pause
    shorter than acceptable_pause (3 s), When the monitor ticks at the worst
    moment (just before each beat), Expect zero suspicions and zero deaths."""
    monitor = HealthMonitor()
    now = 0.0
    monitor.heartbeat("a", now)
    for i, j in enumerate(jitter):
        gap = 1.0 + j + (pauses[i % len(pauses)] if i % pause_every == 0 else 0.0)
        assert monitor.tick(now + gap - 1e-9) == []
        now += gap
        assert monitor.heartbeat("a", now) == []
    assert monitor.state("a") is Health.ALIVE


@settings(max_examples=60, deadline=None)
@given(
    intervals=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=150),
    silence_fraction=st.floats(0.0, 1.0),
)
def test_silence_within_mean_plus_pause_keeps_phi_below_log2(
    intervals: list[float], silence_fraction: float
) -> None:
    """Given any history of intervals, When the silence is at most the mean
    interval plus acceptable_pause, Expect phi <= log10(2), far below any threshold."""
    config = DetectorConfig()
    detector = PhiAccrualDetector(config)
    now = 0.0
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    silence = silence_fraction * (detector.mean + config.acceptable_pause)
    assert detector.phi(now + silence) <= math.log10(2) + 1e-12
    assert detector.suspect_at > now + config.acceptable_pause


def test_suspected_agent_that_beats_again_is_restored() -> None:
    """Given a suspected agent, When it beats again before dead_after, Expect
    SUSPECTED -> ALIVE, and the long gap not to blunt the next detection."""
    monitor = HealthMonitor()
    last = beat_steadily(monitor, "a", 0.0, 50)
    [t] = monitor.tick(last + 5.0)
    assert (t.old, t.new) == (Health.ALIVE, Health.SUSPECTED)
    [t] = monitor.heartbeat("a", last + 6.0)
    assert (t.old, t.new, t.at, t.reason) == (
        Health.SUSPECTED,
        Health.ALIVE,
        last + 6.0,
        "heartbeat resumed",
    )
    assert monitor.tick(last + 6.0 + STEADY_SUSPECT - 0.01) == []
    assert [x.new for x in monitor.tick(last + 6.0 + STEADY_SUSPECT + 0.01)] == [Health.SUSPECTED]


def test_connection_closed_is_dead_instantly() -> None:
    """Given a healthy agent, When the broker reports its connection closed,
    Expect ALIVE -> DEAD at that instant, reported once."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0)
    assert monitor.connection_closed("a", 0.5) == [
        Transition("a", Health.ALIVE, Health.DEAD, 0.5, "connection closed")
    ]
    assert monitor.connection_closed("a", 0.6) == []
    assert monitor.tick(100.0) == []
    assert monitor.connection_closed("unknown", 0.6) == []


def test_connection_closed_of_an_old_incarnation_is_ignored() -> None:
    """Given an agent that restarted as incarnation 2, When the close event of
    incarnation 1's connection arrives late, Expect no transition."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0, {"incarnation": 1})
    monitor.heartbeat("a", 1.0, {"incarnation": 2})
    monitor.heartbeat("a", 2.0, {"incarnation": 2})
    assert monitor.connection_closed("a", 2.1, {"incarnation": 1}) == []
    assert monitor.connection_closed("a", 2.2, {"incarnation": 2})[0].new is Health.DEAD


def test_dead_agent_rejoining_with_a_new_incarnation_recovers() -> None:
    """Given a DEAD agent, When a new incarnation beats, Expect DEAD -> RECOVERING
    (rejoined with fresh state), then RECOVERING -> ALIVE after two more beats."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0, {"incarnation": 1, "started_at": 0.0})
    monitor.connection_closed("a", 1.0)
    [t] = monitor.heartbeat("a", 3.0, {"incarnation": 2, "started_at": 2.5})
    assert (t.old, t.new, t.reason) == (Health.DEAD, Health.RECOVERING, "rejoined with fresh state")
    assert monitor.heartbeat("a", 4.0, {"incarnation": 2}) == []
    [t] = monitor.heartbeat("a", 5.0, {"incarnation": 2})
    assert (t.old, t.new, t.reason) == (Health.RECOVERING, Health.ALIVE, "recovered")


def test_restart_faster_than_detection_is_reported_as_death_and_rejoin() -> None:
    """Given a live agent, When a beat with a later started_at arrives, Expect
    the old incarnation DEAD and the new one RECOVERING, in that order."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0, {"started_at": 0.0})
    moves = [(t.old, t.new) for t in monitor.heartbeat("a", 1.0, {"started_at": 0.9})]
    assert moves == [(Health.ALIVE, Health.DEAD), (Health.DEAD, Health.RECOVERING)]


def test_stale_incarnation_heartbeats_are_ignored() -> None:
    """Given an agent at incarnation 2, When a delayed beat of incarnation 1
    arrives, Expect no transition and the stale beat counted."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0, {"incarnation": 2})
    assert monitor.heartbeat("a", 0.5, {"incarnation": 1}) == []
    assert monitor.stale_heartbeats == 1


def test_a_single_stray_beat_after_death_does_not_resurrect() -> None:
    """Given an agent DEAD by connection close, When one in-flight beat arrives
    and nothing follows, Expect RECOVERING, then SUSPECTED and DEAD, never ALIVE."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0)
    monitor.connection_closed("a", 0.1)
    [t] = monitor.heartbeat("a", 0.2)
    assert (t.new, t.reason) == (Health.RECOVERING, "heartbeat resumed after death")
    news = [t.new for t in monitor.tick(60.0)]
    assert news == [Health.SUSPECTED, Health.DEAD]


def test_standby_agents_are_backup_and_can_switch_mode() -> None:
    """Given an agent beating with standby=True, Expect BACKUP; When it beats
    without standby (promoted), Expect BACKUP -> ALIVE."""
    monitor = HealthMonitor()
    [t] = monitor.heartbeat("c2", 0.0, {"standby": True})
    assert t.new is Health.BACKUP
    [t] = monitor.heartbeat("c2", 1.0, {"standby": False})
    assert (t.old, t.new, t.reason) == (Health.BACKUP, Health.ALIVE, "left standby")


def test_history_window_is_bounded() -> None:
    """Given a window of 10, When 100 beats 1 s apart are followed by 10 beats
    0.5 s apart, Expect the mean to reflect only the last 10 intervals."""
    detector = PhiAccrualDetector(DetectorConfig(window_size=10))
    now = 0.0
    for _ in range(100):
        detector.heartbeat(now)
        now += 1.0
    for _ in range(11):
        detector.heartbeat(now)
        now += 0.5
    assert detector.mean == pytest.approx(0.5)


def test_one_crash_among_thousands_is_the_only_transition() -> None:
    """Given 3000 agents beating every second, When one stops, Expect exactly
    its SUSPECTED and DEAD transitions and nothing else."""
    monitor = HealthMonitor()
    agents = [f"agent-{i}" for i in range(3000)]
    moves: list[tuple[str, Health]] = []
    for second in range(40):
        for agent in agents:
            if agent != "agent-7" or second < 20:
                monitor.heartbeat(agent, float(second))
        for step in range(4):
            moves += [(t.agent_id, t.new) for t in monitor.tick(second + step / 4 + 0.2)]
    assert moves == [("agent-7", Health.SUSPECTED), ("agent-7", Health.DEAD)]
    assert len(monitor.agents(Health.ALIVE)) == len(agents) - 1


def test_forget_drops_an_agent() -> None:
    """Given a monitored agent, When it is forgotten, Expect it unknown and a
    later beat to be a fresh join."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0)
    assert monitor.forget("a") and "a" not in monitor
    assert monitor.heartbeat("a", 1.0)[0].old is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_interval": 0},
        {"suspect_threshold": 0.5},
        {"dead_after": -1},
        {"acceptable_pause": -0.1},
        {"min_std_deviation": 0},
        {"window_size": 1},
        {"recovery_heartbeats": -1},
    ],
)
def test_invalid_config_is_refused(kwargs: dict[str, Any]) -> None:
    """Given an impossible setting, Expect ConfigError."""
    with pytest.raises(ConfigError):
        DetectorConfig(**kwargs)


def test_non_numeric_incarnation_is_refused() -> None:
    """Given heartbeat info with a non-numeric incarnation, Expect ValueError."""
    with pytest.raises(ValueError, match="incarnation"):
        HealthMonitor().heartbeat("a", 0.0, {"incarnation": "two"})


def test_partial_incarnation_info_is_compared_field_by_field() -> None:
    """Given beats that carry only some of incarnation/started_at, Expect only
    the fields both sides know to be compared, so none of them looks stale."""
    monitor = HealthMonitor()
    monitor.heartbeat("a", 0.0, {"started_at": 5.0})
    assert monitor.heartbeat("a", 1.0, {"incarnation": 0}) == []
    assert monitor.heartbeat("a", 2.0, {"incarnation": 0, "started_at": 5.0}) == []
    assert monitor.heartbeat("a", 3.0) == []
    assert monitor.stale_heartbeats == 0
    assert monitor.heartbeat("a", 4.0, {"started_at": 4.0}) == []
    assert monitor.stale_heartbeats == 1


def test_without_recovery_heartbeats_a_rejoin_is_alive_at_once() -> None:
    """Given recovery_heartbeats=0, When a dead agent beats, Expect DEAD ->
    RECOVERING -> ALIVE in the same call."""
    monitor = HealthMonitor(DetectorConfig(recovery_heartbeats=0))
    monitor.heartbeat("a", 0.0)
    monitor.connection_closed("a", 1.0)
    moves = [(t.old, t.new) for t in monitor.heartbeat("a", 2.0)]
    assert moves == [(Health.DEAD, Health.RECOVERING), (Health.RECOVERING, Health.ALIVE)]


def test_status_views_report_phi_and_last_heartbeat() -> None:
    """Given a steady agent, Expect phi to rise with silence, and the snapshot
    to show its state, last heartbeat and a mean interval of one second."""
    monitor = HealthMonitor()
    last = beat_steadily(monitor, "a", 0.0, 20)
    assert monitor.phi("a", last + 1.0) < monitor.phi("a", last + 4.4) < 8.0
    [view] = monitor.snapshot(last + 1.0)
    assert (view.agent_id, view.state, view.last_heartbeat) == ("a", Health.ALIVE, last)
    assert view.mean_interval == pytest.approx(1.0, abs=0.02)
    assert monitor.phi("unknown", last) == 0.0


def test_suspicion_from_outside_is_refuted_by_a_heartbeat_or_confirmed_by_silence() -> None:
    """Given a healthy agent, When something not conclusive suspects it (an unconfirmed
    connection close) with 1.5 s to answer, Expect SUSPECTED at once; a heartbeat in time
    restores it, and silence past the 1.5 s makes it DEAD even though phi would wait longer."""
    cfg = DetectorConfig(heartbeat_interval=1.0, acceptable_pause=3.0, dead_after=2.0)
    mon = HealthMonitor(cfg)
    mon.heartbeat("a", 0.0)
    mon.heartbeat("b", 0.0)

    assert [t.new for t in mon.suspect("a", 0.5, within=1.5)] == [Health.SUSPECTED]
    assert [t.new for t in mon.suspect("b", 0.5, within=1.5)] == [Health.SUSPECTED]
    assert [t.new for t in mon.heartbeat("a", 1.0)] == [Health.ALIVE]

    assert mon.tick(1.9) == []
    assert [(t.agent_id, t.new) for t in mon.tick(2.0)] == [("b", Health.DEAD)]
    assert mon.state("a") is Health.ALIVE
    assert mon.suspect("b", 3.0, within=1.5) == []  # already dead: nothing to suspect
    assert mon.suspect("nobody", 3.0, within=1.5) == []
