"""Specification of quarantine orders and the book every agent keeps of them."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robeing.protocol.errors import DecodeError
from robeing.protocol.evidence import ed25519_check, ed25519_signer
from robeing.protocol.quarantine import Order, QuarantineBook, Quarantined

KEYS = {name: nacl.signing.SigningKey.generate() for name in ("g1", "g2", "w1")}
CHECK = ed25519_check({n: bytes(k.verify_key) for n, k in KEYS.items()})
ROLES = {"g1": "guardian", "g2": "guardian", "w1": "worker"}


def role_of(agent: str) -> str | None:
    return ROLES.get(agent)


def signed(order: Order, key: str | None = None) -> bytes:
    return order.sign(ed25519_signer(KEYS[key or order.guardian]))


def order(
    at: float, action: str = "quarantine", guardian: str = "g1", target: str = "bad"
) -> Order:
    return Order(guardian, target, action, "flooding", at, ("w2", "w3"))


def test_an_order_signed_by_a_guardian_verifies_and_round_trips() -> None:
    o = order(100.0)
    assert Order.verify(signed(o), CHECK, role_of) == o


@pytest.mark.parametrize(
    "raw, match",
    [
        (signed(order(1.0, guardian="w1")), "not a certified guardian"),
        (signed(order(1.0), key="g2"), "does not verify"),
        (b"\x93junk", "msgpack|list|items"),
        ("text", "4096"),
        (b"x" * 5000, "4096"),
    ],
)
def test_an_order_not_signed_by_its_guardian_or_malformed_is_refused(raw: Any, match: str) -> None:
    """Given an order signed by a worker, by another guardian than it names, or junk,
    Expect DecodeError: only certified guardians order quarantines."""
    with pytest.raises(DecodeError, match=match):
        Order.verify(raw, CHECK, role_of)


def test_an_altered_order_does_not_verify() -> None:
    statement, signature = msgpack.unpackb(signed(order(5.0)))
    forged = statement.replace(b"bad", b"bud")
    with pytest.raises(DecodeError, match="does not verify"):
        Order.verify(msgpack.packb([forged, signature]), CHECK, role_of)


def test_the_newest_order_wins_and_a_release_lifts_a_quarantine() -> None:
    """Given a quarantine, then an older release, then a newer one by another guardian,
    Expect quarantined until the newer release, and listeners told of each change."""
    book, changes = QuarantineBook(), []
    book.listeners.append(lambda target, q: changes.append((target, q)))
    assert book.apply(order(10.0), b"q", now=10.0)
    with pytest.raises(Quarantined, match="flooding"):
        book.check("bad")
    assert not book.apply(order(5.0, "release"), b"old", now=10.0)
    assert book.blocks("bad")
    assert book.apply(order(11.0, "release", guardian="g2"), b"r", now=11.0)
    assert not book.blocks("bad")
    book.check("bad")
    assert changes == [("bad", True), ("bad", False)]
    assert book.quarantined() == {}


def test_an_order_from_the_future_is_refused() -> None:
    with pytest.raises(DecodeError, match="future"):
        QuarantineBook(max_skew=30).apply(order(1000.0), b"x", now=100.0)


def test_the_book_is_bounded_forgetting_releases_first() -> None:
    book = QuarantineBook(capacity=3)
    book.apply(order(1.0, target="a"), b"a", 10)
    book.apply(order(2.0, "release", target="b"), b"b", 10)
    book.apply(order(3.0, target="c"), b"c", 10)
    book.apply(order(4.0, target="d"), b"d", 10)
    assert len(book) == 3 and set(book.quarantined()) == {"a", "c", "d"}
    assert book.orders() == [b"a", b"c", b"d"]


ORDERS = st.lists(
    st.builds(
        order,
        at=st.integers(0, 5).map(float),
        action=st.sampled_from(["quarantine", "release"]),
        guardian=st.sampled_from(["g1", "g2"]),
        target=st.sampled_from(["a", "b"]),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(ORDERS)
def test_every_order_of_arrival_gives_the_same_verdict(orders: list[Order]) -> None:
    """Given the same orders in any order (and some twice), Expect the same agents
    quarantined: guardians need no agreement protocol among themselves."""
    verdicts = set()
    for perm in itertools.islice(itertools.permutations(orders), 24):
        book = QuarantineBook()
        for o in [*perm, *perm[:2]]:
            book.apply(o, repr(o).encode(), now=100.0)
        verdicts.add(tuple(sorted(book.quarantined())))
    assert len(verdicts) <= 1
