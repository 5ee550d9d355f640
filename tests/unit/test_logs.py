"""Log lines: ISO-8601 timestamps, the agent's context, and every field passed with extra=."""

from __future__ import annotations

import json
import logging
import re

from robeing.agents.logs import JsonFormatter, TextFormatter, _ContextFilter, task_id_var

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(**extra: object) -> logging.LogRecord:
    rec = logging.makeLogRecord(
        {"name": "robeing.x", "levelno": 30, "levelname": "WARNING", "msg": "hello %s",
         "args": ("world",), "created": 1_800_000_000.25, **extra}
    )  # fmt: skip
    _ContextFilter("w1", "worker").filter(rec)
    return rec


def test_json_lines_carry_an_iso_timestamp_the_context_and_the_extra_fields() -> None:
    token = task_id_var.set("t-9")
    try:
        line = json.loads(JsonFormatter().format(record(queue="robeing.agent.w1", attempt=2)))
    finally:
        task_id_var.reset(token)
    assert line["ts"] == "2027-01-15T08:00:00.250Z" and ISO.match(line["ts"])
    assert (line["msg"], line["agent_id"], line["role"], line["task_id"]) == (
        "hello world",
        "w1",
        "worker",
        "t-9",
    )
    assert (line["queue"], line["attempt"]) == ("robeing.agent.w1", 2)


def test_text_lines_start_with_an_iso_timestamp_and_end_with_the_extra_fields() -> None:
    line = TextFormatter().format(record(queue="q1"))
    stamp, rest = line.split(" ", 1)
    assert ISO.match(stamp), line
    assert rest == "WARNING w1 robeing.x: hello world [queue=q1]"
