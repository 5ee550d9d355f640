"""Specification of chunked-transfer messages and their reassembly bookkeeping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robeing.protocol.errors import DecodeError
from robeing.protocol.transfer import MAX_CHUNK, Begin, Chunk, End, Reassembly, chunks_for


def test_messages_round_trip_and_are_validated() -> None:
    begin = Begin("t1", 10, 4, 3, "blob", "x.bin")
    assert Begin.from_data(begin.to_data()) == begin
    assert Chunk.from_data(Chunk("t1", 2, b"ab").to_data()) == Chunk("t1", 2, b"ab")
    assert End.from_data(End("t1", "ab" * 32).to_data()).sha256 == "ab" * 32
    with pytest.raises(DecodeError, match="chunk count"):
        Begin.from_data({**begin.to_data(), "chunks": 4})
    with pytest.raises(DecodeError, match="chunk_size"):
        Begin.from_data({**begin.to_data(), "chunk_size": MAX_CHUNK + 1})
    with pytest.raises(DecodeError, match="sha256"):
        End.from_data({"id": "t1", "sha256": "zz" * 32})


def test_chunks_are_accepted_once_in_any_order_and_must_fit() -> None:
    """Given a 10-byte transfer in 4-byte chunks, Expect chunks accepted in any order, a
    duplicate ignored, a wrong size, index or sender refused, and complete only with all."""
    r = Reassembly(Begin("t1", 10, 4, 3, "blob"), "alice", 0.0)
    assert r.accept(Chunk("t1", 2, b"ij"), "alice", 1.0)
    assert not r.accept(Chunk("t1", 2, b"ij"), "alice", 1.0)
    assert r.missing() == [0, 1] and not r.complete
    for bad, who in [(Chunk("t1", 0, b"abc"), "alice"), (Chunk("t1", 3, b""), "alice"),
                     (Chunk("t1", 0, b"abcd"), "mallory")]:  # fmt: skip
        with pytest.raises(DecodeError):
            r.accept(bad, who, 1.0)
    r.accept(Chunk("t1", 0, b"abcd"), "alice", 2.0)
    r.accept(Chunk("t1", 1, b"efgh"), "alice", 2.0)
    assert r.complete and r.offset(2) == 8 and r.last == 2.0


@given(st.integers(0, 10**9), st.integers(1, MAX_CHUNK))
def test_chunk_count_covers_the_size(size: int, chunk: int) -> None:
    n = chunks_for(size, chunk)
    assert (n >= 1 and (n - 1) * chunk <= max(size, 0) <= n * chunk) or size == 0
