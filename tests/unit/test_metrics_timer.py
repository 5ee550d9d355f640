"""The heartbeat-receive histogram: direct heartbeats, and members' beats in summaries."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from robeing.agents.metrics import HandlerTimer
from robeing.protocol.clusters.summary import SUMMARY_TYPE


def message(kind: str, payload: Any = None, sent: float = 0.0) -> Any:
    return SimpleNamespace(type=kind, payload=payload, envelope=SimpleNamespace(timestamp=sent))


def test_a_heartbeat_is_timed_from_its_signed_send_time() -> None:
    timer = HandlerTimer()
    timer.before_handle(None, message("heartbeat", {}, time.time() - 0.3))  # type: ignore[arg-type]
    assert timer.heartbeat_receive.count == 1
    assert 0.3 <= timer.heartbeat_receive.total < 5


def test_each_members_beat_in_summaries_is_timed_once() -> None:
    """Given a summary of two members, then the same summary again, then one newer beat,
    Expect three observations: a repeated beat is not new to the registry."""
    timer = HandlerTimer()
    now = time.time()
    first = {"members": [{"id": "a", "at": now - 0.5}, {"id": "b", "at": now - 1.0}]}
    timer.before_handle(None, message(SUMMARY_TYPE, first))  # type: ignore[arg-type]
    timer.before_handle(None, message(SUMMARY_TYPE, first))  # type: ignore[arg-type]
    newer = {"members": [{"id": "a", "at": now - 0.1}, {"id": "b", "at": now - 1.0}]}
    timer.before_handle(None, message(SUMMARY_TYPE, newer))  # type: ignore[arg-type]
    assert timer.heartbeat_receive.count == 3
    assert 1.6 <= timer.heartbeat_receive.total < 6


def test_a_malformed_summary_times_nothing_and_raises_nothing() -> None:
    timer = HandlerTimer()
    for payload in (None, [], {"members": "x"}, {"members": [1, {"id": 2, "at": 1.0}]}):
        timer.before_handle(None, message(SUMMARY_TYPE, payload))  # type: ignore[arg-type]
    timer.before_handle(None, message(SUMMARY_TYPE, {"members": [{"id": "a", "at": "1"}]}))  # type: ignore[arg-type]
    assert timer.heartbeat_receive.count == 0
