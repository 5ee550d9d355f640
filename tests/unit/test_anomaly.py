"""Specification of rate anomaly detection from receivers' counts."""

from __future__ import annotations

from robeing.protocol.anomaly import RateLimits, RateWatch


def test_a_sender_suddenly_far_above_its_usual_rate_raises_one_alert() -> None:
    """Given x sending 5/s to each of two receivers for a minute, When it jumps to 500/s,
    Expect one 'rate' anomaly (then a cooldown), with its baseline near 10/s."""
    watch = RateWatch(RateLimits(factor=10, floor=100))
    counts = {"r1": 0, "r2": 0}
    found = []
    for t in range(60):
        for r in counts:
            counts[r] += 5
            found += watch.report(r, {"x": counts[r]}, float(t))
    assert found == []
    for t in range(60, 70):
        for r in counts:
            counts[r] += 500
            found += watch.report(r, {"x": counts[r]}, float(t))
    assert len(found) == 1
    (a,) = found
    assert a.kind == "rate" and a.rate >= 500 and 5 <= a.baseline <= 15 and a.receivers == 2


def test_one_receiver_alone_cannot_raise_an_alert() -> None:
    watch = RateWatch(RateLimits(factor=2, floor=1))
    found = []
    for t in range(30):
        found += watch.report("liar", {"x": (t * t) * 1000}, float(t))
    assert found == []


def test_a_quiet_burst_below_the_floor_is_no_anomaly() -> None:
    watch = RateWatch(RateLimits(factor=10, floor=100))
    found = []
    for t in range(20):
        for r in ("r1", "r2"):
            count = t if t < 10 else 9 + (t - 9) * 20  # 1/s, then 20/s: 40/s in all
            found += watch.report(r, {"x": count}, float(t))
    assert found == []


def test_reaching_many_receivers_at_once_is_a_fanout_anomaly() -> None:
    watch = RateWatch(RateLimits(fanout=5, floor=1e9))
    found = []
    for t in range(3):
        for i in range(8):
            found += watch.report(f"r{i}", {"x": t + 1}, float(t))
    assert [a.kind for a in found] == ["fanout"] and found[0].receivers == 6  # > 5


def test_a_restarted_receiver_and_stale_reports_do_not_count() -> None:
    """Given a receiver whose counter went back (it restarted), Expect no negative rate;
    a receiver silent for longer than stale_s drops out of the total."""
    watch = RateWatch(RateLimits(stale_s=5))
    watch.report("r1", {"x": 100}, 0.0)
    watch.report("r1", {"x": 5}, 1.0)
    assert watch.rates(1.0) == {"x": 0.0}
    watch.report("r2", {"x": 0}, 1.0)
    watch.report("r2", {"x": 50}, 2.0)
    assert watch.rates(2.0) == {"x": 50.0}
    assert watch.rates(20.0) == {"x": 0.0}
