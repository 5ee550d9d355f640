"""Deep-analysis task types: what a specialist runs and a plain worker does not offer.

Specialists (and coordinators, which need the types' split and merge) get
these by default; a worker offers them only if its app registers them
(``app.include(analysis_tasks.tasks)``). All need the ``analysis`` skill.
Values are lists of finite numbers (booleans are not numbers here); a
payload of the wrong shape is refused with a ``Reject`` saying what was
expected, so the task fails at once instead of being retried.

``describe``
    ``{"values": [...], "quantiles": [p, ...]}`` (or a bare list). Result:
    count, mean, population and sample variance, stdev, skewness, excess
    kurtosis, min, max, and ``quantiles`` ``{str(p): value}`` (default
    quartiles; linear interpolation between order statistics, as
    ``statistics.quantiles(method="inclusive")``). Quantiles need all the
    data in one place, so a task asking for them runs whole; with
    ``"quantiles": []`` it splits, each part returning its moments only.
``outliers``
    ``{"values": [...], "method": "zscore"|"iqr", "threshold": t}``. z-score:
    ``|x - mean| > t * stdev`` (default t = 3); IQR: outside
    ``[q1 - t*IQR, q3 + t*IQR]`` (default t = 1.5). Result: the bounds and
    ``[[index, value], ...]`` of the outliers. Needs global statistics first:
    never split.
``correlate``
    ``{"series": {name: [...], ...}}`` (2 to 32 aligned series) or
    ``{"x": [...], "y": [...]}``. Result: Pearson's r per pair
    (``"a~b"``, None for a constant series) and the matrix. Splits by rows;
    parts return co-moments, merged exactly.
``trend``
    ``{"y": [...], "x": [...]}`` (``x`` defaults to 0, 1, 2…). Result: the
    least-squares line ``slope``, ``intercept`` and ``r2``. Splits by rows.
``histogram``
    ``{"values": [...], "bins": k, "range": [lo, hi]}``. Result: ``edges``
    (k + 1), ``counts`` (k; the last bin includes ``hi``), ``below`` and
    ``above`` the range. Without a range it is the data's min and max, which
    needs all the data: only a task with a range splits (counts add up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ...protocol.errors import Reject
from ...protocol.taskgraph import split_list
from ..app import App, TaskContext
from .moments import CoMoments, Moments

__all__ = ["ANALYSIS", "tasks"]

ANALYSIS = "analysis"
MAX_SERIES = 32
MAX_BINS = 10_000
DEFAULT_QUANTILES = (0.25, 0.5, 0.75)
_NUMBER = frozenset({int, float})

tasks = App(name="analysis")


# --- reading payloads ------------------------------------------------------------


def _numbers(values: Any, what: str, min_len: int = 1) -> list[float]:
    if not isinstance(values, list | tuple):
        raise Reject(f"{what} must be a list of numbers, got {type(values).__name__}")
    if len(values) < min_len:
        raise Reject(f"{what} needs at least {min_len} value(s), got {len(values)}")
    for i, v in enumerate(values):
        if type(v) not in _NUMBER:
            raise Reject(f"{what}: item {i} is {type(v).__name__}, not a number")
        if not math.isfinite(v):
            raise Reject(f"{what}: item {i} is not finite")
    return list(values)


def _body(payload: Any, task: str) -> dict[str, Any]:
    if isinstance(payload, list | tuple):
        return {"values": payload}
    if not isinstance(payload, dict):
        raise Reject(f"{task} expects a map (see its documentation), got {type(payload).__name__}")
    return payload


def _number(p: Mapping[str, Any], key: str, default: float, low: float = 0.0) -> float:
    value = p.get(key, default)
    if type(value) not in _NUMBER or not math.isfinite(value) or value < low:
        raise Reject(f"{key!r} must be a finite number >= {low:g}")
    return float(value)


def _only(results: Mapping[str, Any]) -> Any:
    (result,) = results.values()
    return result


def _whole(payload: Any, n: int) -> list[Any]:
    return [payload]


def quantile(ordered: Sequence[float], p: float) -> float:
    """The ``p`` quantile of sorted data, interpolating linearly (the "inclusive" method)."""
    h = (len(ordered) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])


# --- describe ----------------------------------------------------------------------


def _probabilities(p: Mapping[str, Any]) -> tuple[float, ...]:
    raw = p.get("quantiles", DEFAULT_QUANTILES)
    if not isinstance(raw, list | tuple) or len(raw) > 100:
        raise Reject("'quantiles' must be a list of at most 100 probabilities")
    for q in raw:
        if type(q) not in _NUMBER or not 0.0 <= q <= 1.0:
            raise Reject("each quantile must be a number between 0 and 1")
    return tuple(float(q) for q in raw)


def _split_describe(payload: Any, n: int) -> list[Any]:
    p = payload if isinstance(payload, dict) else None
    if p is None or p.get("quantiles") != [] or not isinstance(p.get("values"), list):
        return [payload]  # quantiles need every value in one place
    return [{"values": c, "quantiles": [], "partial": True} for c in split_list(p["values"], n)]


def _merge_describe(results: Mapping[str, Any]) -> dict[str, Any]:
    parts = list(results.values())
    if len(parts) == 1 and "partial" not in parts[0]:
        return dict(parts[0])
    total = Moments.from_data(parts[0]["moments"])
    for part in parts[1:]:
        total = total.merge(Moments.from_data(part["moments"]))
    return {**total.describe(), "quantiles": {}}


@tasks.task("describe", specialization=ANALYSIS, split=_split_describe, merge=_merge_describe)
def describe(ctx: TaskContext) -> dict[str, Any]:
    """Descriptive statistics with quantiles (see the module doc).

    Raises:
        Reject: not a non-empty list of finite numbers, or bad quantiles.
    """
    p = _body(ctx.payload, "describe")
    values = _numbers(p.get("values"), "describe 'values'")
    moments = Moments.of(values)
    if p.get("partial") is True:
        return {"moments": moments.to_data(), "partial": True}
    probabilities = _probabilities(p)
    ordered = sorted(values) if probabilities else []
    return {
        **moments.describe(),
        "quantiles": {str(q): quantile(ordered, q) for q in probabilities},
    }


# --- outliers ----------------------------------------------------------------------


@tasks.task("outliers", specialization=ANALYSIS, split=_whole, merge=_only)
def outliers(ctx: TaskContext) -> dict[str, Any]:
    """Values far from the rest, by z-score or by the interquartile range.

    Raises:
        Reject: bad values, an unknown method or a negative threshold.
    """
    p = _body(ctx.payload, "outliers")
    values = _numbers(p.get("values"), "outliers 'values'")
    method = p.get("method", "zscore")
    if method == "zscore":
        t = _number(p, "threshold", 3.0)
        m = Moments.of(values)
        spread = t * math.sqrt(m.m2 / m.n)
        lo, hi = m.mean - spread, m.mean + spread
    elif method == "iqr":
        t = _number(p, "threshold", 1.5)
        ordered = sorted(values)
        q1, q3 = quantile(ordered, 0.25), quantile(ordered, 0.75)
        lo, hi = q1 - t * (q3 - q1), q3 + t * (q3 - q1)
    else:
        raise Reject(f"outliers 'method' must be 'zscore' or 'iqr', got {method!r:.40}")
    found = [[i, v] for i, v in enumerate(values) if v < lo or v > hi]
    return {"method": method, "threshold": t, "bounds": [lo, hi], "outliers": found}


# --- correlate and trend -------------------------------------------------------------


def _series(p: Any) -> tuple[list[str], list[list[float]]]:
    if not isinstance(p, dict):
        raise Reject("correlate expects {'series': {name: [...]}} or {'x': [...], 'y': [...]}")
    series = p.get("series") if "series" in p else {"x": p.get("x"), "y": p.get("y")}
    if not isinstance(series, dict) or not 2 <= len(series) <= MAX_SERIES:
        raise Reject(f"correlate needs 2 to {MAX_SERIES} named series")
    names = [str(k) for k in series]
    columns = [_numbers(v, f"series {k!r}", 1) for k, v in series.items()]
    if len({len(c) for c in columns}) != 1:
        raise Reject("correlated series must all have the same length")
    return names, columns


def _split_rows(payload: Any, n: int) -> list[Any]:
    try:
        names, columns = _series(payload)
    except Reject:
        return [payload]
    chunks = [split_list(col, n) for col in columns]
    return [
        {"series": dict(zip(names, rows, strict=True)), "partial": True}
        for rows in zip(*chunks, strict=True)
    ]


def _merge_comoments(results: Mapping[str, Any]) -> tuple[list[str], CoMoments]:
    parts = list(results.values())
    total = CoMoments.from_data(parts[0]["comoments"])
    for part in parts[1:]:
        total = total.merge(CoMoments.from_data(part["comoments"]))
    return list(parts[0]["names"]), total


def _correlation(names: list[str], cm: CoMoments) -> dict[str, Any]:
    k = len(names)
    matrix = [[cm.correlation(i, j) for j in range(k)] for i in range(k)]
    pairs = {f"{names[i]}~{names[j]}": matrix[i][j] for i in range(k) for j in range(i + 1, k)}
    return {"n": cm.n, "names": names, "pearson": pairs, "matrix": matrix}


def _merge_correlate(results: Mapping[str, Any]) -> dict[str, Any]:
    parts = list(results.values())
    if len(parts) == 1 and "partial" not in parts[0]:
        return dict(parts[0])
    return _correlation(*_merge_comoments(results))


@tasks.task("correlate", specialization=ANALYSIS, split=_split_rows, merge=_merge_correlate)
def correlate(ctx: TaskContext) -> dict[str, Any]:
    """Pearson correlation between aligned series.

    Raises:
        Reject: fewer than 2 or more than 32 series, unequal lengths, bad values.
    """
    names, columns = _series(ctx.payload)
    cm = CoMoments.of(columns)
    if isinstance(ctx.payload, dict) and ctx.payload.get("partial") is True:
        return {"names": names, "comoments": cm.to_data(), "partial": True}
    return _correlation(names, cm)


def _xy(p: Any) -> tuple[list[float], list[float]]:
    if not isinstance(p, dict):
        raise Reject("trend expects {'y': [...], 'x': [...]} (x optional)")
    y = _numbers(p.get("y"), "trend 'y'", 2)
    if p.get("x") is None:
        start = p.get("x0", 0)
        if type(start) is not int:
            raise Reject("trend 'x0' must be an integer")
        return [float(start + i) for i in range(len(y))], y
    x = _numbers(p.get("x"), "trend 'x'", 2)
    if len(x) != len(y):
        raise Reject("trend 'x' and 'y' must have the same length")
    return x, y


def _split_trend(payload: Any, n: int) -> list[Any]:
    try:
        x, y = _xy(payload)
    except Reject:
        return [payload]
    # Explicit x values travel with their rows; implicit ones only as an offset.
    explicit, start = payload.get("x") is not None, payload.get("x0", 0)
    out, offset = [], 0
    for ys in split_list(y, n):
        part: dict[str, Any] = {"y": ys, "partial": True}
        if explicit:
            part["x"] = x[offset : offset + len(ys)]
        else:
            part["x0"] = start + offset
        out.append(part)
        offset += len(ys)
    return out


def _line(cm: CoMoments) -> dict[str, Any]:
    sxx, syy, sxy = cm.c[0][0], cm.c[1][1], cm.c[0][1]
    if sxx == 0.0:
        raise Reject("trend needs at least two distinct x values")
    slope = sxy / sxx
    r2 = 1.0 if syy == 0.0 else sxy * sxy / (sxx * syy)
    return {"n": cm.n, "slope": slope, "intercept": cm.means[1] - slope * cm.means[0], "r2": r2}


def _merge_trend(results: Mapping[str, Any]) -> dict[str, Any]:
    parts = list(results.values())
    if len(parts) == 1 and "partial" not in parts[0]:
        return dict(parts[0])
    return _line(_merge_comoments(results)[1])


@tasks.task("trend", specialization=ANALYSIS, split=_split_trend, merge=_merge_trend)
def trend(ctx: TaskContext) -> dict[str, Any]:
    """Least-squares linear trend ``y = slope * x + intercept`` and its r².

    Raises:
        Reject: fewer than two points, unequal lengths, or a single x value.
    """
    x, y = _xy(ctx.payload)
    cm = CoMoments.of([x, y])
    if ctx.payload.get("partial") is True:
        return {"names": ["x", "y"], "comoments": cm.to_data(), "partial": True}
    return _line(cm)


# --- histogram ---------------------------------------------------------------------


def _histogram_args(p: Any) -> tuple[list[float], int, tuple[float, float] | None]:
    p = _body(p, "histogram")
    values = _numbers(p.get("values"), "histogram 'values'")
    bins = p.get("bins", 10)
    if type(bins) is not int or not 1 <= bins <= MAX_BINS:
        raise Reject(f"histogram 'bins' must be an integer from 1 to {MAX_BINS}")
    span = p.get("range")
    if span is None:
        return values, bins, None
    bounds = _numbers(span, "histogram 'range'", 2)
    if len(bounds) != 2 or not bounds[0] < bounds[1]:
        raise Reject("histogram 'range' must be [low, high] with low < high")
    lo, hi = bounds
    return values, bins, (float(lo), float(hi))


def _split_histogram(payload: Any, n: int) -> list[Any]:
    try:
        values, bins, span = _histogram_args(payload)
    except Reject:
        return [payload]
    if span is None:
        return [payload]  # the range comes from all the data
    return [{"values": c, "bins": bins, "range": list(span)} for c in split_list(values, n)]


def _merge_histogram(results: Mapping[str, Any]) -> dict[str, Any]:
    parts = list(results.values())
    merged = dict(parts[0])
    merged["counts"] = [sum(c) for c in zip(*(p["counts"] for p in parts), strict=True)]
    merged["below"] = sum(p["below"] for p in parts)
    merged["above"] = sum(p["above"] for p in parts)
    return merged


@tasks.task("histogram", specialization=ANALYSIS, split=_split_histogram, merge=_merge_histogram)
def histogram(ctx: TaskContext) -> dict[str, Any]:
    """Counts of values in equal-width bins.

    Raises:
        Reject: bad values, bins outside 1-10000, or a bad range.
    """
    values, bins, span = _histogram_args(ctx.payload)
    lo, hi = span if span is not None else (float(min(values)), float(max(values)))
    width = (hi - lo) / bins if hi > lo else 1.0
    counts, below, above = [0] * bins, 0, 0
    for v in values:
        if v < lo:
            below += 1
        elif v > hi:
            above += 1
        else:
            counts[min(int((v - lo) / width), bins - 1)] += 1
    edges = [lo + i * width for i in range(bins)] + [hi if hi > lo else lo + width]
    return {"edges": edges, "counts": counts, "below": below, "above": above}
