"""Specification of the deep-analysis task types and the partial moments they merge.

Split tasks run the way the coordinator runs them: split the payload, run each
chunk, carry each result over the wire (msgpack), merge in subtask order; the
merged result must equal the whole one (to float rounding) without any part
seeing another part's values.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robeing.agents.app import TaskContext
from robeing.agents.tasking.analysis_tasks import quantile, tasks
from robeing.agents.tasking.moments import CoMoments, Moments
from robeing.protocol.envelope import pack, unpack
from robeing.protocol.errors import Reject

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLOATS = st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3))


def run(task_type: str, payload: Any) -> Any:
    return tasks.tasks[task_type].fn(TaskContext("t", 1, 1, payload, {}, None, None))  # type: ignore[arg-type]


def run_split(task_type: str, payload: Any, n: int) -> tuple[list[Any], Any]:
    tdef = tasks.tasks[task_type]
    assert tdef.split is not None and tdef.merge is not None
    chunks = list(tdef.split(payload, n))
    results = {f"t.{i}": unpack(pack(run(task_type, c))) for i, c in enumerate(chunks)}
    return chunks, tdef.merge(results)


def close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


# --- moments -----------------------------------------------------------------------


@PROPERTY
@given(st.lists(FLOATS, min_size=1, max_size=60), st.lists(FLOATS, min_size=1, max_size=60))
def test_merged_moments_equal_the_moments_of_the_whole(a: list[float], b: list[float]) -> None:
    """Given two series, Expect merging their moments to give the moments of both together."""
    assert close(Moments.of(a).merge(Moments.of(b)).describe(), Moments.of(a + b).describe())


def test_a_constant_series_has_no_spread_after_a_merge() -> None:
    """Given halves of a constant series whose means round apart (found by hypothesis),
    Expect variance, skewness and kurtosis 0, not the rounding noise left in M2."""
    a, b = [699050.797], [699050.797] * 2
    merged = Moments.of(a).merge(Moments.of(b))
    assert merged.m2 != 0.0 or Moments.of(a + b).m2 != 0.0  # the noise this guards against
    for moments in (merged, Moments.of(a + b)):
        d = moments.describe()
        assert (d["variance"], d["stdev"], d["skewness"], d["kurtosis"]) == (0.0, 0.0, 0.0, 0.0)


@PROPERTY
@given(st.lists(st.tuples(FLOATS, FLOATS, FLOATS), min_size=2, max_size=60), st.integers(1, 59))
def test_merged_comoments_equal_the_comoments_of_the_whole(
    rows: list[tuple[float, float, float]], cut: int
) -> None:
    cut = min(cut, len(rows) - 1)
    cols = [list(c) for c in zip(*rows, strict=True)]
    head = CoMoments.of([c[:cut] for c in cols])
    tail = CoMoments.of([c[cut:] for c in cols])
    whole = CoMoments.of(cols)
    merged = head.merge(tail)
    assert merged.n == whole.n
    assert close(list(merged.means), list(whole.means))
    scale = max(1.0, *(abs(x) for row in whole.c for x in row))
    for i in range(3):
        for j in range(3):
            assert abs(merged.c[i][j] - whole.c[i][j]) <= 1e-9 * scale


# --- describe ---------------------------------------------------------------------


def test_describe_matches_the_statistics_module() -> None:
    """Given known data, Expect what Python's statistics module says, skewness and kurtosis."""
    data = [2, 4, 4, 4, 5, 5, 7, 9]
    r = run("describe", {"values": data})
    assert r["count"] == 8 and r["mean"] == 5.0
    assert r["variance"] == pytest.approx(statistics.pvariance(data))
    assert r["sample_variance"] == pytest.approx(statistics.variance(data))
    quartiles = statistics.quantiles(data, method="inclusive")
    assert r["quantiles"] == pytest.approx(
        dict(zip(["0.25", "0.5", "0.75"], quartiles, strict=True))
    )
    assert r["skewness"] == pytest.approx(0.65625, rel=1e-6)
    assert r["kurtosis"] == pytest.approx(-0.21875, rel=1e-6)


def test_describe_splits_only_without_quantiles_and_merges_moments_not_data() -> None:
    """Given quantiles asked, Expect one whole part; given none, Expect parts whose results
    carry moments only (seven numbers), merged to the whole's statistics."""
    values = [random.Random(3).gauss(10, 3) for _ in range(1000)]
    assert len(tasks.tasks["describe"].split({"values": values}, 4)) == 1  # type: ignore[misc]
    chunks, merged = run_split("describe", {"values": values, "quantiles": []}, 4)
    assert len(chunks) == 4
    assert all(set(run("describe", c)) == {"moments", "partial"} for c in chunks)
    assert close(merged, run("describe", {"values": values, "quantiles": []}))


@pytest.mark.parametrize(
    "payload",
    [{"values": []}, {"values": [1, True]}, {"values": [1, math.inf]}, "x", {"quantiles": [2]}],
)
def test_describe_refuses_bad_payloads(payload: Any) -> None:
    with pytest.raises(Reject):
        run("describe", payload)


# --- outliers --------------------------------------------------------------------


def test_outliers_by_zscore_and_by_iqr() -> None:
    data = [10.0] * 20 + [11.0] * 20 + [100.0]
    z = run("outliers", {"values": data, "method": "zscore", "threshold": 3})
    assert z["outliers"] == [[40, 100.0]]
    iqr = run("outliers", {"values": [1, 2, 3, 4, 5, 6, 7, 8, 50], "method": "iqr"})
    assert iqr["outliers"] == [[8, 50]]
    assert iqr["bounds"] == [-3.0, 13.0]
    with pytest.raises(Reject, match="method"):
        run("outliers", {"values": data, "method": "magic"})


# --- correlate and trend --------------------------------------------------------------


def test_correlate_matches_statistics_and_splits_exactly() -> None:
    rng = random.Random(7)
    x = [rng.random() for _ in range(500)]
    y = [2 * v + rng.gauss(0, 0.1) for v in x]
    z = [rng.random() for _ in range(500)]
    whole = run("correlate", {"series": {"x": x, "y": y, "z": z}})
    assert whole["pearson"]["x~y"] == pytest.approx(statistics.correlation(x, y))
    assert whole["matrix"][0][0] == pytest.approx(1.0)
    _, merged = run_split("correlate", {"series": {"x": x, "y": y, "z": z}}, 3)
    assert close(merged, whole)
    assert run("correlate", {"x": [1, 2, 3], "y": [5, 5, 5]})["pearson"]["x~y"] is None
    with pytest.raises(Reject, match="same length"):
        run("correlate", {"x": [1, 2], "y": [1]})


def test_trend_fits_a_line_and_splits_with_implicit_x() -> None:
    y = [3.0 + 0.5 * i for i in range(101)]
    whole = run("trend", {"y": y})
    assert whole["slope"] == pytest.approx(0.5) and whole["intercept"] == pytest.approx(3.0)
    assert whole["r2"] == pytest.approx(1.0)
    chunks, merged = run_split("trend", {"y": y}, 4)
    assert [c["x0"] for c in chunks] == [0, 26, 51, 76]
    assert close(merged, whole)
    xs = [float(i * i) for i in range(50)]
    ys = [1.0 - 2 * v for v in xs]
    assert close(run_split("trend", {"x": xs, "y": ys}, 3)[1], run("trend", {"x": xs, "y": ys}))
    with pytest.raises(Reject, match="distinct"):
        run("trend", {"x": [1, 1], "y": [1, 2]})


# --- histogram ---------------------------------------------------------------------


def test_histogram_counts_and_splits_only_with_a_range() -> None:
    values = [0, 1, 2, 2, 3, 9, 10, -1, 11]
    r = run("histogram", {"values": values, "bins": 5, "range": [0, 10]})
    assert r["counts"] == [2, 3, 0, 0, 2] and (r["below"], r["above"]) == (1, 1)
    assert len(r["edges"]) == 6
    _, merged = run_split("histogram", {"values": values, "bins": 5, "range": [0, 10]}, 3)
    assert merged == r
    assert len(tasks.tasks["histogram"].split({"values": values}, 3)) == 1  # type: ignore[misc]
    assert sum(run("histogram", values)["counts"]) == len(values)


def test_quantile_interpolates_like_the_inclusive_method() -> None:
    data = sorted([5.0, 1.0, 3.0, 2.0, 4.0, 10.0])
    assert [quantile(data, p) for p in (0.25, 0.5, 0.75)] == pytest.approx(
        statistics.quantiles(data, method="inclusive")
    )
    assert quantile(data, 0.0) == 1.0 and quantile(data, 1.0) == 10.0


def test_every_analysis_task_needs_the_analysis_skill() -> None:
    assert {t.specialization for t in tasks.tasks.values()} == {"analysis"}
    assert set(tasks.tasks) == {"describe", "outliers", "correlate", "trend", "histogram"}
