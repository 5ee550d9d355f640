"""Built-in task types that do real work: counting, sorting, statistics, hashing, conversion.

Agents that take work get these unless their app registers a task of the same type.
Every handler is a pure, synchronous function of ``ctx.payload``; a payload of
the wrong shape is refused with a ``Reject`` that says what was expected, so
the task fails permanently instead of being retried.

``wordcount`` (data_processing)
    Payload: text, or a list of texts. Result: ``{"words": total, "unique": n,
    "top": [[word, count], ...], "counts": {word: count}}``; ``top`` holds the
    20 most frequent words, by count descending, then word ascending. A word
    is a run of Unicode letters and digits, possibly joined by inner
    apostrophes (``don't``; U+2019 counts as ``'``), lowercased; underscores and
    outer quotes separate words. Split: contiguous runs of lines (or list items).
``sort`` (data_processing)
    Payload: a list, or ``{"items": [...], "key": field, "reverse": bool}``
    where ``key`` (optional) names the field to sort maps by. Result: the list
    sorted stably, as ``sorted()`` would. Items that cannot be compared are
    refused. Split: contiguous chunks; a chunk's payload carries
    ``"partial": true``, which makes its result a sort payload of the sorted
    chunk (so the merge knows ``key`` and ``reverse``); the merge is a stable
    k-way merge.
``statistics`` (analysis)
    Payload: a non-empty list of finite numbers, or ``{"values": [...]}``.
    Result: ``{"count", "sum", "mean", "min", "max", "variance", "stdev"}``
    (population variance). Split: contiguous chunks; each subtask's result is
    the statistics of its chunk, combined exactly (Chan et al.) by the merge.
``sha256`` (data_processing)
    Payload: text (UTF-8) or bytes → hex digest; a list of them → a list of
    hex digests, in order. Split: list chunks.
``convert`` (communication)
    Payload: ``{"data": ..., "from": FORMAT, "to": FORMAT}`` with the formats
    of :func:`robeing.agents.formats.convert` (default ``json``).
    Never split: it always runs as one subtask.

Split functions never raise: a payload they do not understand goes whole to
one subtask, whose handler refuses it with a clear reason.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from ...protocol.errors import Reject
from ...protocol.taskgraph import split_list
from ..app import App, TaskContext
from ..formats import convert as convert_format

__all__ = ["TOP_N", "tasks"]

tasks = App(name="builtin")

TOP_N = 20
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_SEQ = (list, tuple)
_NUMBER = frozenset({int, float})  # exact types: a bool is not a number here
_STR = frozenset({str})


def _only(results: Mapping[str, Any]) -> Any:
    """Merge of a task that is never split: its one subtask's result."""
    (result,) = results.values()
    return result


def _whole(payload: Any, n: int) -> list[Any]:
    """Split that keeps the payload in one piece, whatever ``n`` is."""
    return [payload]


def _type_error(task: str, expected: str, items: Sequence[Any], allowed: frozenset[type]) -> str:
    index, bad = next((i, v) for i, v in enumerate(items) if type(v) not in allowed)
    return f"{task} expects {expected}; item {index} is {type(bad).__name__}"


# --- wordcount ---------------------------------------------------------------


def _word_result(counts: Mapping[str, int]) -> dict[str, Any]:
    top = heapq.nsmallest(TOP_N, counts.items(), key=lambda wc: (-wc[1], wc[0]))
    return {
        "words": sum(counts.values()),
        "unique": len(counts),
        "top": [[word, count] for word, count in top],
        "counts": dict(counts),
    }


def _split_words(payload: Any, n: int) -> list[Any]:
    if isinstance(payload, str):
        # Line breaks are never part of a word, so no word straddles two chunks.
        return ["".join(lines) for lines in split_list(payload.splitlines(keepends=True), n)]
    if isinstance(payload, _SEQ):
        return split_list(payload, n)
    return [payload]


def _merge_words(results: Mapping[str, Any]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for result in results.values():
        counts.update(result["counts"])
    return _word_result(counts)


# The built-in handlers run inline on the event loop: bounded by the 1 MiB
# message limit they take at most ~60 ms (wordcount of 1 MiB of text,
# measured), far below the heartbeat interval, and a thread handoff would cost
# more than most of them (~0.2 ms per task).
@tasks.task(
    "wordcount",
    specialization="data_processing",
    split=_split_words,
    merge=_merge_words,
    inline=True,
)
def wordcount(ctx: TaskContext) -> dict[str, Any]:
    """Count the words of a text or of a list of texts.

    Raises:
        Reject: the payload is neither text nor a list of texts.
    """
    payload = ctx.payload
    if isinstance(payload, _SEQ):
        if not set(map(type, payload)) <= _STR:
            raise Reject(_type_error("wordcount", "texts", payload, _STR))
        payload = "\n".join(payload)
    elif not isinstance(payload, str):
        raise Reject(f"wordcount expects text or a list of texts, got {type(payload).__name__}")
    words = _WORD.findall(payload.replace("\u2019", "'"))
    # Lowercase each word, not the text: lowering may split a word (İ → i + U+0307).
    return _word_result(Counter(map(str.lower, words)))


# --- sort --------------------------------------------------------------------


def _sort_args(payload: Any) -> tuple[Sequence[Any], str | None, bool, bool]:
    """Return ``(items, key, reverse, partial)`` of a sort payload."""
    if isinstance(payload, _SEQ):
        return payload, None, False, False
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), _SEQ):
        raise Reject("sort expects a list or {'items': [...], 'key': field, 'reverse': bool}")
    key = payload.get("key")
    reverse, partial = payload.get("reverse", False), payload.get("partial", False)
    if key is not None and not isinstance(key, str):
        raise Reject(f"sort 'key' must be a field name, got {type(key).__name__}")
    if not isinstance(reverse, bool) or not isinstance(partial, bool):
        raise Reject("sort 'reverse' and 'partial' must be booleans")
    return payload["items"], key, reverse, partial


def _incomparable(exc: TypeError) -> Reject:
    return Reject(f"sort needs mutually comparable items ({exc}); sort one kind, or by a 'key'")


def _split_sort(payload: Any, n: int) -> list[Any]:
    try:
        items, key, reverse, _ = _sort_args(payload)
    except Reject:
        return [payload]
    chunks = split_list(items, n)
    return [{"items": c, "key": key, "reverse": reverse, "partial": True} for c in chunks]


def _merge_sort(results: Mapping[str, Any]) -> list[Any]:
    runs = list(results.values())
    key = itemgetter(runs[0]["key"]) if runs[0]["key"] is not None else None
    try:
        # heapq.merge breaks ties by run order, so it is as stable as sorted().
        return list(heapq.merge(*(r["items"] for r in runs), key=key, reverse=runs[0]["reverse"]))
    except TypeError as exc:
        raise _incomparable(exc) from exc


@tasks.task(
    "sort", specialization="data_processing", split=_split_sort, merge=_merge_sort, inline=True
)
def sort(ctx: TaskContext) -> list[Any] | dict[str, Any]:
    """Sort a list stably, optionally by a field of its maps and in reverse.

    Raises:
        Reject: the payload has the wrong shape, an item lacks the key field,
            or items cannot be compared with each other.
    """
    items, key, reverse, partial = _sort_args(ctx.payload)
    if key is not None and not all(isinstance(i, dict) and key in i for i in items):
        raise Reject(f"sort by {key!r} needs maps that all have the field {key!r}")
    try:
        ordered = sorted(items, key=None if key is None else itemgetter(key), reverse=reverse)
    except TypeError as exc:
        raise _incomparable(exc) from exc
    if partial:
        return {"items": ordered, "key": key, "reverse": reverse, "partial": True}
    return ordered


# --- statistics --------------------------------------------------------------


def _values(payload: Any) -> Any:
    return payload.get("values") if isinstance(payload, dict) else payload


def _stats_result(
    count: int, total: float, lo: float, hi: float, m2: float
) -> dict[str, int | float]:
    variance = m2 / count
    if type(total) is int and not -(2**63) <= total < 2**64:
        total = float(total)  # beyond what msgpack carries as an integer
    return {
        "count": count,
        "sum": total,
        "mean": total / count,
        "min": lo,
        "max": hi,
        "variance": variance,
        "stdev": math.sqrt(variance),
    }


def _split_stats(payload: Any, n: int) -> list[Any]:
    values = _values(payload)
    return split_list(values, n) if isinstance(values, _SEQ) else [payload]


def _merge_stats(results: Mapping[str, Any]) -> dict[str, int | float]:
    parts = list(results.values())
    count = sum(p["count"] for p in parts)
    sums = [p["sum"] for p in parts]
    total = sum(sums) if all(type(s) is int for s in sums) else math.fsum(sums)
    mean = total / count
    # Chan et al.: M2 = sum of the parts' M2 + sum of n_i * (mean_i - mean)^2.
    m2 = math.fsum(p["variance"] * p["count"] + p["count"] * (p["mean"] - mean) ** 2 for p in parts)
    lo, hi = min(p["min"] for p in parts), max(p["max"] for p in parts)
    return _stats_result(count, total, lo, hi, m2)


@tasks.task(
    "statistics",
    specialization="analysis",
    split=_split_stats,
    merge=_merge_stats,
    inline=True,
)
def statistics(ctx: TaskContext) -> dict[str, int | float]:
    """Count, sum, mean, extremes and population variance of a list of numbers.

    Raises:
        Reject: the payload is not a non-empty list of finite numbers (booleans
            are not numbers here), or the numbers overflow a float.
    """
    values = _values(ctx.payload)
    if not isinstance(values, _SEQ):
        raise Reject("statistics expects a list of numbers or {'values': [...]}")
    if not values:
        raise Reject("statistics needs at least one value")
    kinds = set(map(type, values))
    if not kinds <= _NUMBER:
        raise Reject(_type_error("statistics", "numbers", values, _NUMBER))
    try:
        # fsum is exact up to its final rounding; all-integer sums stay exact integers.
        total = math.fsum(values) if float in kinds else sum(values)
        if not math.isfinite(total):
            raise Reject("statistics expects finite numbers, got NaN or infinity")
        mean = total / len(values)
        m2 = math.fsum([(x - mean) ** 2 for x in values])
    except (OverflowError, ValueError) as exc:
        raise Reject(f"statistics expects finite numbers within float range ({exc})") from exc
    return _stats_result(len(values), total, min(values), max(values), m2)


# --- sha256 ------------------------------------------------------------------


def _digest(data: Any) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    elif not isinstance(data, bytes | bytearray):
        raise Reject(f"sha256 expects text, bytes or a list of them, got {type(data).__name__}")
    return hashlib.sha256(data).hexdigest()


def _split_sha(payload: Any, n: int) -> list[Any]:
    return split_list(payload, n) if isinstance(payload, _SEQ) else [payload]


def _merge_sha(results: Mapping[str, Any]) -> str | list[str]:
    parts = list(results.values())
    if len(parts) == 1:  # also a single text or bytes value, whose result is one digest
        return parts[0]
    return [digest for part in parts for digest in part]


@tasks.task(
    "sha256", specialization="data_processing", split=_split_sha, merge=_merge_sha, inline=True
)
def sha256(ctx: TaskContext) -> str | list[str]:
    """SHA-256 hex digest of text (UTF-8) or bytes, or of each item of a list.

    Raises:
        Reject: the payload (or a list item) is neither text nor bytes.
    """
    if isinstance(ctx.payload, _SEQ):
        return [_digest(item) for item in ctx.payload]
    return _digest(ctx.payload)


# --- convert -----------------------------------------------------------------


@tasks.task("convert", specialization="communication", split=_whole, merge=_only, inline=True)
def convert(ctx: TaskContext) -> Any:
    """Convert ``data`` between json, msgpack, csv and records.

    Raises:
        Reject: the payload has the wrong shape, a format is unknown, or the
            data does not parse or cannot be written in the target format.
    """
    p = ctx.payload
    if not isinstance(p, dict) or "data" not in p:
        raise Reject("convert expects {'data': ..., 'from': FORMAT, 'to': FORMAT}")
    src, dst = p.get("from", "json"), p.get("to", "json")
    if not isinstance(src, str) or not isinstance(dst, str):
        raise Reject("convert 'from' and 'to' must be format names")
    try:
        return convert_format(p["data"], src, dst)
    except (TypeError, ValueError) as exc:  # values the target format cannot hold
        raise Reject(f"convert cannot write this data as {dst}: {exc}") from exc
