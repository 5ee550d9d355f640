"""A member's side of cluster leadership: term announcements are fenced, nudges are checked."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from robeing.agents.context import AgentContext, Message
from robeing.agents.leading import TERM_TYPE, Leadership
from robeing.protocol.election import StaleEpoch
from robeing.protocol.envelope import Envelope
from robeing.protocol.errors import DecodeError


def host(cluster: str = "etl") -> Leadership:
    agent = SimpleNamespace(id="w3", cluster_id=cluster)
    return Leadership(cast(AgentContext, agent))


def announce(h: Leadership, sender: str, term: int, **payload: Any) -> Any:
    payload = {"cluster": "etl", "term": term, "leader": sender, **payload}
    env = Envelope(TERM_TYPE, payload, sender=sender)
    cert = SimpleNamespace(role="worker")
    return h.on_term(Message(env, cast(Any, cert), h.agent))


def test_a_member_refuses_an_announcement_of_an_older_term() -> None:
    """Given term 7 announced by w2, When the deposed w1 announces term 6, Expect
    StaleEpoch (dead-lettered as stale_epoch) and w2 still known as the leader."""
    h = host()
    assert announce(h, "w1", 6) == {"term": 6}
    assert announce(h, "w2", 7) == {"term": 7}
    with pytest.raises(StaleEpoch) as refused:
        announce(h, "w1", 6)
    assert refused.value.reason == "stale_epoch"
    assert h.known["etl"] == (7, "w2")
    assert announce(h, "w2", 7) == {"term": 7}  # the current leader keeps talking


def test_an_announcement_for_another_leader_or_a_bad_term_is_refused() -> None:
    h = host()
    with pytest.raises(DecodeError):
        announce(h, "w1", 6, leader="w2")  # a member cannot announce someone else
    with pytest.raises(DecodeError):
        announce(h, "w1", 0)
    assert h.known == {}


def test_a_nudge_for_another_cluster_claims_nothing() -> None:
    h = host("default")
    env = Envelope("cluster.elect", {"cluster": "etl"}, sender="coord")
    answer = h.on_elect(Message(env, cast(Any, SimpleNamespace(role="coordinator")), h.agent))
    assert answer["claimed"] is False and h.claims == 0
