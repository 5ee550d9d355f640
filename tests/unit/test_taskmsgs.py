"""check_submittable (protocol/taskmsgs.py): what a client refuses before sending.

Given requests, expect one ConfigError line for a task out of bounds or too
large for a message, and nothing for tasks that fit.
"""

from __future__ import annotations

import pytest

from robeing.protocol.errors import ConfigError
from robeing.protocol.taskmsgs import MAX_TASK_BYTES, TaskRequest, check_submittable


def test_tasks_that_fit_pass() -> None:
    check_submittable([TaskRequest(id="t1", type="add", payload={"a": 1})])
    check_submittable([TaskRequest(id="t2", type="add", payload="x" * (MAX_TASK_BYTES - 200))])


def test_a_task_too_large_for_a_message_is_refused_in_one_line() -> None:
    big = TaskRequest(id="big", type="add", payload="x" * MAX_TASK_BYTES)
    with pytest.raises(ConfigError, match=r"task 'big' is \d+ bytes, over the \d+") as info:
        check_submittable([TaskRequest(id="ok", type="add"), big])
    assert "\n" not in str(info.value)


def test_a_payload_msgpack_cannot_carry_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot be sent"):
        check_submittable([TaskRequest(id="o", type="add", payload=object())])


def test_out_of_bounds_fields_are_refused_first() -> None:
    with pytest.raises(ConfigError, match="priority must be 0 to 9"):
        check_submittable([TaskRequest(id="p", type="add", priority=11)])


def test_to_data_keeps_values_as_they_are() -> None:
    """The wire map holds the payload itself (no deep copy), lists for tuples."""
    payload = {"nested": [1, 2, {"k": "v"}]}
    data = TaskRequest(id="t", type="add", payload=payload, skills=("a",)).to_data()
    assert data["payload"] is payload
    assert data["skills"] == ["a"] and "resources" not in data
