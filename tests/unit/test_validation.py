"""Specification of result validation: signed claims, mismatch evidence, the verdict,
and the coordinator's sampling of finished attempts."""

from __future__ import annotations

import random

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robeing.protocol.coordinator.audit import Auditor
from robeing.protocol.errors import DecodeError
from robeing.protocol.evidence import ed25519_check, ed25519_signer
from robeing.protocol.taskgraph import TaskRecord, TaskSpec
from robeing.protocol.validation import Claim, Mismatch, judge

KEYS = {n: nacl.signing.SigningKey.generate() for n in ("coord", "w1", "w2")}
CHECK = ed25519_check({n: bytes(k.verify_key) for n, k in KEYS.items()})


def claim(
    signer: str, result: object, computed_by: str | None = None, payload: object = 3
) -> Claim:
    return Claim.make(
        signer, "t1", computed_by or signer, "square", payload, result, ed25519_signer(KEYS[signer])
    )


def test_a_claim_verifies_against_its_signer_only() -> None:
    c = claim("coord", 10, computed_by="w1")
    assert Claim.verify(c.raw, CHECK) == c
    forged = Claim.make("w1", "t1", "w1", "square", 3, 9, ed25519_signer(KEYS["w2"]))
    with pytest.raises(DecodeError, match="does not verify"):
        Claim.verify(forged.raw, CHECK)


def test_two_claims_that_disagree_are_evidence_anyone_can_check() -> None:
    """Given the coordinator's claim that w1 reported 10 and w2's claim of 9 for the same
    input, Expect a Mismatch that verifies from its data alone; the same result, another
    input or another task is no mismatch."""
    reported, rerun = claim("coord", 10, "w1"), claim("w2", 9)
    evidence = Mismatch.of(reported, rerun).to_data()
    assert Mismatch.verify(evidence, CHECK).second.result == rerun.result
    with pytest.raises(ValueError):
        Mismatch.of(reported, claim("w2", 10))
    with pytest.raises(ValueError):
        Mismatch.of(reported, claim("w2", 9, payload=4))
    with pytest.raises(DecodeError):
        Mismatch.verify({"claims": [reported.raw, reported.raw]}, CHECK)


@pytest.mark.parametrize(
    "results, blamed",
    [
        ({"a": "x", "b": "y", "c": "y"}, "a"),
        ({"a": "x", "b": "x", "c": "y"}, "c"),
        ({"a": "x", "b": "y"}, None),  # one against one: nobody can tell
        ({"a": "x", "b": "y", "c": "z"}, None),
        ({"a": "x", "b": "x", "c": "x"}, None),
    ],
)
def test_judge_blames_only_the_one_outvoted(results: dict[str, str], blamed: str | None) -> None:
    assert judge(results) == blamed


def record(task_type: str = "square", deps: tuple[str, ...] = ()) -> TaskRecord:
    return TaskRecord(TaskSpec(id="t1", type=task_type, payload=3, depends_on=deps), 1, deps, None)


@given(st.floats(0.0, 1.0))
def test_the_auditor_samples_about_its_rate_and_never_skipped_types(rate: float) -> None:
    auditor = Auditor(random.Random(1), rate=rate, skip=frozenset({"noisy"}))
    hits = sum(auditor.consider(record(), "w1", 9) is not None for _ in range(400))
    assert abs(hits / 400 - rate) < 0.12
    assert auditor.consider(record("noisy"), "w1", 1) is None
    assert auditor.consider(record(deps=("t0",)), "w1", 1) is None
    assert Auditor(random.Random(1)).consider(record(), "w1", 9) is None  # rate 0: off
