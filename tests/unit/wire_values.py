"""Hypothesis strategies for the values msgpack carries, shared by the decoder tests."""

from __future__ import annotations

from hypothesis import strategies as st

MSGPACK_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
PAYLOADS = st.recursive(
    MSGPACK_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
"""Well-formed payloads: string map keys, no NaN (what an envelope may carry)."""

JUNK = st.recursive(
    st.one_of(MSGPACK_SCALARS, st.floats()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(MSGPACK_SCALARS, st.floats()), inner, max_size=5),
    ),
    max_leaves=20,
)
"""Anything msgpack can decode, NaN, infinities and non-string map keys included."""
