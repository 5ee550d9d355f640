"""Specification of replay protection: the timestamp window and the bounded seen-id cache."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from robeing.protocol.errors import Replay, StaleMessage
from robeing.protocol.replay import ReplayWindow, SeenIds

NOW = 1_700_000_000.0
HORIZON = 80.0  # with 8 buckets: one bucket per 10 s
SPAN = HORIZON / 8

SeenFactory = Callable[..., SeenIds]


@pytest.fixture
def make_seen() -> SeenFactory:
    """Factory: a seen-id cache with an 80 s horizon in 8 buckets."""

    def make(horizon: float = HORIZON, buckets: int = 8, max_ids: int = 2_000_000) -> SeenIds:
        return SeenIds(horizon, buckets=buckets, max_ids=max_ids)

    return make


# -- ReplayWindow -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (0.0, True),
        (-300.0, True),
        (-300.001, False),
        (30.0, True),
        (30.001, False),
        (-10_000.0, False),
        (10_000.0, False),
    ],
)
def test_window_bounds(offset: float, accepted: bool) -> None:
    """Given a window of 300 s back and 30 s ahead, When checking timestamps around its edges,
    Expect the edges themselves accepted and anything beyond StaleMessage."""
    window = ReplayWindow(max_age=300.0, max_skew=30.0)

    if accepted:
        window.check(NOW + offset, NOW)
    else:
        with pytest.raises(StaleMessage):
            window.check(NOW + offset, NOW)


def test_window_error_says_old_or_future() -> None:
    """Given an old and a future timestamp, Expect messages that say which."""
    window = ReplayWindow(max_age=10.0, max_skew=1.0)

    with pytest.raises(StaleMessage, match="old"):
        window.check(NOW - 20, NOW)
    with pytest.raises(StaleMessage, match="future"):
        window.check(NOW + 20, NOW)


def test_age_exempt_skips_only_the_age_bound() -> None:
    """Given an age-exempt check, When the timestamp is a day old, Expect it accepted;
    when it is beyond the skew in the future, Expect StaleMessage."""
    window = ReplayWindow(max_age=300.0, max_skew=30.0)

    window.check(NOW - 86_400, NOW, age_exempt=True)
    with pytest.raises(StaleMessage):
        window.check(NOW + 31, NOW, age_exempt=True)


def test_window_defaults() -> None:
    """Expect the default window to be 300 s old and 30 s ahead."""
    assert ReplayWindow() == ReplayWindow(max_age=300.0, max_skew=30.0)


# -- SeenIds ------------------------------------------------------------------------


def test_id_is_accepted_once(make_seen: SeenFactory) -> None:
    """Given an id recorded, When recorded again within the horizon, Expect Replay;
    other ids are still accepted."""
    seen = make_seen()
    seen.add("a", NOW)

    with pytest.raises(Replay) as exc:
        seen.add("a", NOW + HORIZON - 1)
    seen.add("b", NOW + 1)

    assert exc.value.reason == "replay"
    assert "a" in seen and "b" in seen and "c" not in seen
    assert len(seen) == 2


def test_id_is_remembered_for_the_whole_horizon(make_seen: SeenFactory) -> None:
    """Given an id recorded at the very end of a bucket, When other traffic flows until just
    before the horizon has passed, Expect the id still remembered."""
    seen = make_seen()
    start = NOW - (NOW % SPAN) + SPAN - 0.001  # last instant of a bucket
    seen.add("a", start)

    t = start
    while t < start + HORIZON:
        seen.add(f"filler-{t}", t)
        t += 1.0

    assert "a" in seen
    with pytest.raises(Replay):
        seen.add("a", start + HORIZON)


def test_ids_are_forgotten_after_the_horizon(make_seen: SeenFactory) -> None:
    """Given ids recorded at one time, When other ids arrive after the horizon plus one
    bucket, Expect the old ids forgotten and the count to drop accordingly."""
    seen = make_seen()
    for i in range(5):
        seen.add(f"old-{i}", NOW)

    seen.add("new", NOW + HORIZON + 2 * SPAN)

    assert all(f"old-{i}" not in seen for i in range(5))
    assert "new" in seen
    assert len(seen) == 1


def test_same_id_is_accepted_again_after_the_horizon(make_seen: SeenFactory) -> None:
    """Given an id recorded and nothing else since, When the same id arrives after the horizon
    plus one bucket, Expect it accepted (the cache forgets ids older than its horizon)."""
    seen = make_seen()
    seen.add("a", NOW)

    seen.add("a", NOW + HORIZON + 2 * SPAN)

    assert len(seen) == 1


def test_max_ids_evicts_oldest_buckets_and_counts_them(make_seen: SeenFactory) -> None:
    """Given a cap of 3 ids, When two ids arrive in one bucket and two more in later buckets,
    Expect the oldest bucket dropped, the count within the cap and the eviction counted."""
    seen = make_seen(max_ids=3)
    seen.add("a1", NOW)
    seen.add("a2", NOW)
    seen.add("b", NOW + SPAN)
    assert seen.evicted == 0

    seen.add("c", NOW + 2 * SPAN)

    assert len(seen) == 2
    assert seen.evicted == 2
    assert "a1" not in seen and "a2" not in seen
    assert "b" in seen and "c" in seen


def test_max_ids_is_a_hard_cap_even_within_one_bucket(make_seen: SeenFactory) -> None:
    """Given a cap of 100 ids, When a flood of 1000 ids arrives within one bucket,
    Expect the cache never to hold more than the cap (the documented hard cap)."""
    seen = make_seen(max_ids=100)

    for i in range(1000):
        seen.add(f"flood-{i}", NOW)

    assert len(seen) <= 100
    assert seen.evicted >= 900


def test_discard_forgets_one_id(make_seen: SeenFactory) -> None:
    """Given ids a and b recorded, When a is discarded (handed back for a retry),
    Expect a accepted again, b still refused and the count adjusted."""
    seen = make_seen()
    seen.add("a", NOW)
    seen.add("b", NOW)

    seen.discard("a")

    assert "a" not in seen and len(seen) == 1
    seen.add("a", NOW + 1)
    with pytest.raises(Replay):
        seen.add("b", NOW + 1)


def test_discard_of_an_unknown_id_changes_nothing(make_seen: SeenFactory) -> None:
    """Given one id recorded, When an unknown id is discarded, Expect the count unchanged."""
    seen = make_seen()
    seen.add("a", NOW)

    seen.discard("zzz")

    assert len(seen) == 1 and "a" in seen


def test_tiny_horizon_still_works(make_seen: SeenFactory) -> None:
    """Given a horizon of zero, When ids are recorded, Expect duplicates at the same instant
    refused (the bucket span has a floor)."""
    seen = make_seen(horizon=0.0)
    seen.add("a", NOW)

    with pytest.raises(Replay):
        seen.add("a", NOW)
