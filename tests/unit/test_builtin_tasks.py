"""Specification of robeing.agents.builtin_tasks: the built-in task types.

Handlers are pure, so each test builds a TaskContext directly. Split and merge
are exercised the way the coordinator runs them: split the payload, run each
chunk, carry each result over the wire (msgpack), merge in subtask order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robeing.agents.app import TaskContext
from robeing.agents.tasking.builtin_tasks import TOP_N, tasks
from robeing.protocol.envelope import pack, unpack
from robeing.protocol.errors import Reject

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Run = Callable[[str, Any], Any]


def _context(payload: Any, task_id: str = "t") -> TaskContext:
    return TaskContext(task_id, 1, 1, payload, {}, None, None)  # type: ignore[arg-type]


@pytest.fixture
def run() -> Run:
    """Run the handler of a task type on one payload."""

    def call(task_type: str, payload: Any) -> Any:
        return tasks.tasks[task_type].fn(_context(payload))

    return call


def run_split(task_type: str, payload: Any, n: int) -> tuple[list[Any], Any]:
    """Split for ``n`` agents, run every chunk, merge: returns (chunks, merged result)."""
    tdef = tasks.tasks[task_type]
    assert tdef.split is not None and tdef.merge is not None
    chunks = list(tdef.split(payload, n))
    results = {
        f"t.{i}": unpack(pack(tdef.fn(_context(chunk, f"t.{i}")))) for i, chunk in enumerate(chunks)
    }
    return chunks, tdef.merge(results)


def test_registered_types_and_specializations() -> None:
    # Given the builtin app / When listing its tasks / Expect each with its skill
    assert {t: d.specialization for t, d in tasks.tasks.items()} == {
        "wordcount": "data_processing",
        "sort": "data_processing",
        "statistics": "analysis",
        "sha256": "data_processing",
        "convert": "communication",
    }


# --- wordcount -----------------------------------------------------------------


def test_wordcount_counts_lowercased_words_with_inner_apostrophes(run: Run) -> None:
    # Given text with case, punctuation, underscores, quotes and a curly apostrophe
    text = "The cat's hat; the CAT. 'Quoted' snake_case don\u2019t Don't 42 café\n"
    # When counting
    result = run("wordcount", text)
    # Expect words folded to lowercase, underscores and outer quotes as separators
    assert result["counts"] == {
        "the": 2, "cat's": 1, "hat": 1, "cat": 1, "quoted": 1, "snake": 1, "case": 1,
        "don't": 2, "42": 1, "café": 1,
    }  # fmt: skip
    assert result["words"] == 12
    assert result["unique"] == 10
    assert result["top"][:2] == [["don't", 2], ["the", 2]]


def test_wordcount_top_is_by_count_then_word_and_capped(run: Run) -> None:
    # Given more distinct words than the top list holds, many tied
    text = " ".join(f"w{i:02d}" for i in range(30)) + " w29 w29 w05"
    # When counting / Expect the most frequent first, ties alphabetical, 20 entries
    top = run("wordcount", text)["top"]
    assert len(top) == TOP_N
    assert top[:4] == [["w29", 3], ["w05", 2], ["w00", 1], ["w01", 1]]


def test_wordcount_of_a_list_counts_every_document(run: Run) -> None:
    # Given documents whose words would join if concatenated naively
    # When counting / Expect each item counted on its own
    assert run("wordcount", ["ab", "cd ab"])["counts"] == {"ab": 2, "cd": 1}


def test_wordcount_of_empty_text_is_zero(run: Run) -> None:
    assert run("wordcount", "") == {"words": 0, "unique": 0, "top": [], "counts": {}}


@pytest.mark.parametrize("payload", [42, {"text": "a"}, ["a", 1], None])
def test_wordcount_rejects_what_is_not_text(run: Run, payload: Any) -> None:
    with pytest.raises(Reject, match="wordcount expects text"):
        run("wordcount", payload)


def test_wordcount_split_is_contiguous_lines_never_more_than_lines() -> None:
    # Given three lines and five agents / When splitting
    chunks, _ = run_split("wordcount", "a\nb b\nc", 5)
    # Expect one chunk per line, in order, rebuilding the text exactly
    assert chunks == ["a\n", "b b\n", "c"]
    assert run_split("wordcount", "", 4)[0] == [""]


_TEXT = st.text(
    alphabet=st.sampled_from([*"abcAB1'_ .,\n\r", "\u2019", "é", "İ", "\u2028", "ß"]), max_size=200
)


@PROPERTY
@given(payload=_TEXT | st.lists(_TEXT, max_size=8), n=st.integers(1, 8))
def test_wordcount_split_and_merge_equals_the_unsplit_count(payload: Any, n: int) -> None:
    # Given any text or list of texts and any number of agents
    whole = tasks.tasks["wordcount"].fn(_context(payload))
    # When split, counted per chunk and merged
    chunks, merged = run_split("wordcount", payload, n)
    # Expect between 1 and n chunks and exactly the unsplit result
    assert 1 <= len(chunks) <= n
    assert merged == whole


# --- sort ------------------------------------------------------------------------


def test_sort_a_bare_list(run: Run) -> None:
    assert run("sort", [3, 1, 2.5, -1]) == [-1, 1, 2.5, 3]


def test_sort_maps_by_key_in_reverse_keeps_ties_in_order(run: Run) -> None:
    # Given maps with tied keys
    items = [{"k": 1, "id": "a"}, {"k": 2, "id": "b"}, {"k": 1, "id": "c"}]
    # When sorting by k in reverse
    result = run("sort", {"items": items, "key": "k", "reverse": True})
    # Expect descending keys, ties in their original order (as sorted() does)
    assert [i["id"] for i in result] == ["b", "a", "c"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([1, "a"], "mutually comparable"),
        ([{"a": 1}, {"a": 2}], "mutually comparable"),
        ({"items": [{"k": 1}, {"j": 2}], "key": "k"}, "all have the field 'k'"),
        ({"items": [1, 2], "key": "k"}, "all have the field 'k'"),
        ({"items": [{"k": 1}, {"k": None}], "key": "k"}, "mutually comparable"),
        ({"items": [1], "reverse": "yes"}, "must be booleans"),
        ({"items": [1], "key": 3}, "must be a field name"),
        ({"values": [1]}, "sort expects a list"),
        ("abc", "sort expects a list"),
    ],
)
def test_sort_rejects_what_it_cannot_order(run: Run, payload: Any, reason: str) -> None:
    with pytest.raises(Reject, match=reason):
        run("sort", payload)


def test_sort_merge_of_incomparable_chunks_rejects() -> None:
    # Given chunks each sortable on its own but not with each other
    # When merging / Expect a Reject naming the problem
    with pytest.raises(Reject, match="mutually comparable"):
        run_split("sort", [1, 2, "a", "b"], 2)


_RECORDS = st.lists(st.fixed_dictionaries({"k": st.integers(0, 5), "id": st.integers(-99, 99)}))


@PROPERTY
@given(
    items=st.lists(st.integers(-5, 5)) | st.lists(st.text(max_size=3)) | _RECORDS,
    reverse=st.booleans(),
    n=st.integers(1, 8),
)
def test_sort_split_and_merge_equals_sorted(items: list[Any], reverse: bool, n: int) -> None:
    # Given any comparable items (maps sorted by a field with many ties)
    key = "k" if items and isinstance(items[0], dict) else None
    payload = {"items": items, "key": key, "reverse": reverse}
    # When split, sorted per chunk and k-way merged
    chunks, merged = run_split("sort", payload, n)
    # Expect between 1 and n chunks and exactly sorted() of the whole, ties stable
    assert 1 <= len(chunks) <= n
    expected = sorted(items, key=None if key is None else lambda i: i["k"], reverse=reverse)
    assert merged == expected == tasks.tasks["sort"].fn(_context(payload))


# --- statistics ------------------------------------------------------------------


def test_statistics_of_a_list(run: Run) -> None:
    # Given numbers / When summarised / Expect the population moments
    assert run("statistics", [2, 4, 4, 4, 5, 5, 7, 9]) == {
        "count": 8, "sum": 40, "mean": 5.0, "min": 2, "max": 9, "variance": 4.0, "stdev": 2.0,
    }  # fmt: skip


def test_statistics_accepts_values_map_and_keeps_integer_sums_exact(run: Run) -> None:
    big = 2**62
    result = run("statistics", {"values": [big, big + 1, 1.5]})
    assert result["count"] == 3 and result["max"] == big + 1
    assert run("statistics", [big, big + 1])["sum"] == 2 * big + 1


def test_statistics_sum_beyond_wire_integers_becomes_a_float(run: Run) -> None:
    # Given integers whose sum no msgpack integer holds / Expect a float sum that packs
    result = run("statistics", [2**63, 2**63])
    assert result["sum"] == 2.0**64
    assert unpack(pack(result))["mean"] == 2.0**63


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "at least one value"),
        ({"values": []}, "at least one value"),
        ([1, "2"], "expects numbers; item 1 is str"),
        ([1, True], "expects numbers; item 1 is bool"),
        ([1.0, math.nan], "finite numbers"),
        ([math.inf, -math.inf], "finite numbers"),
        ([1e308, 1e308], "within float range"),
        ({"items": [1]}, "expects a list of numbers"),
        ("1 2 3", "expects a list of numbers"),
    ],
)
def test_statistics_rejects_what_is_not_numbers(run: Run, payload: Any, reason: str) -> None:
    with pytest.raises(Reject, match=reason):
        run("statistics", payload)


def test_statistics_subtask_result_has_the_shape_of_the_final_result() -> None:
    # Given a split run / When one chunk is summarised on its own
    chunks, merged = run_split("statistics", list(range(10)), 3)
    part = tasks.tasks["statistics"].fn(_context(chunks[0]))
    # Expect a statistics result of that chunk, shaped like the merged one
    assert part.keys() == merged.keys()
    assert part["count"] == len(chunks[0]) == 4


_NUMBERS = st.lists(
    st.integers(-(10**12), 10**12) | st.floats(-1e9, 1e9, allow_nan=False), min_size=1
)


@PROPERTY
@given(values=_NUMBERS, n=st.integers(1, 8))
def test_statistics_split_and_merge_equals_the_unsplit_result(values: list[Any], n: int) -> None:
    # Given any non-empty list of numbers
    whole = tasks.tasks["statistics"].fn(_context(values))
    # When split, summarised per chunk and combined
    _, merged = run_split("statistics", values, n)
    # Expect exact count/min/max, and sums and moments equal up to float rounding
    assert (merged["count"], merged["min"], merged["max"]) == (
        len(values),
        min(values),
        max(values),
    )
    scale = max(abs(v) for v in values) + 1.0
    for field in ("sum", "mean"):
        assert math.isclose(merged[field], whole[field], rel_tol=1e-12, abs_tol=1e-12 * scale)
    for field, tol in (("variance", scale * scale), ("stdev", scale)):
        assert math.isclose(merged[field], whole[field], rel_tol=1e-9, abs_tol=1e-9 * tol)


# --- sha256 ----------------------------------------------------------------------


def test_sha256_of_text_bytes_and_lists(run: Run) -> None:
    digest = hashlib.sha256(b"caf\xc3\xa9").hexdigest()
    assert run("sha256", "café") == digest == run("sha256", b"caf\xc3\xa9")
    assert run("sha256", ["café", b""]) == [digest, hashlib.sha256(b"").hexdigest()]


@pytest.mark.parametrize("payload", [1, None, ["a", 2], {"data": "a"}])
def test_sha256_rejects_what_is_not_text_or_bytes(run: Run, payload: Any) -> None:
    with pytest.raises(Reject, match="sha256 expects text, bytes or a list"):
        run("sha256", payload)


def test_sha256_of_one_value_is_never_split() -> None:
    assert run_split("sha256", "abc", 4) == (["abc"], hashlib.sha256(b"abc").hexdigest())


@PROPERTY
@given(items=st.lists(st.text(max_size=5) | st.binary(max_size=5)), n=st.integers(1, 8))
def test_sha256_split_and_merge_keeps_order(items: list[Any], n: int) -> None:
    _, merged = run_split("sha256", items, n)
    assert merged == tasks.tasks["sha256"].fn(_context(items))


# --- convert ---------------------------------------------------------------------


def test_convert_between_formats(run: Run) -> None:
    # Given CSV / When converted to JSON / Expect the rows as records
    payload = {"data": "a,b\n1,x\n", "from": "csv", "to": "json"}
    assert run("convert", payload) == '[{"a":"1","b":"x"}]'


def test_convert_is_one_subtask_whatever_the_agents() -> None:
    # Given a conversion asked of four agents / When split and merged
    payload = {"data": [{"a": 1}], "from": "records", "to": "json"}
    chunks, merged = run_split("convert", payload, 4)
    # Expect a single subtask whose result is the task's result (not wrapped)
    assert chunks == [payload]
    assert merged == '[{"a":1}]'


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("x", "convert expects"),
        ({"from": "json"}, "convert expects"),
        ({"data": "[]", "from": 1}, "format names"),
        ({"data": "[]", "from": "json", "to": "yaml"}, "unknown format"),
        ({"data": "{", "from": "json"}, "cannot parse json"),
        ({"data": [{"a": b"\x00"}], "from": "records", "to": "json"}, "cannot write"),
    ],
)
def test_convert_rejects_bad_requests(run: Run, payload: Any, reason: str) -> None:
    with pytest.raises(Reject, match=reason):
        run("convert", payload)
