"""Result validation: signed claims about a task's result, mismatch evidence, the verdict (pure).

A guardian validates a sampled finished task by having other agents with the
same skill run it again and comparing. Everything compared is a signed
*claim* (a statement, :mod:`robeing.protocol.evidence`, domain
``robeing.result.v1``) about one task::

    slot    = (task id,)
    content = [computed_by, type, sha256(payload), sha256(result)]

* the coordinator's claim: ``computed_by`` reported this result for the task
  (it alone saw the report, and signs what it saw);
* each re-run's claim, signed by the agent that ran it again.

Two valid claims about one task, for the same type and payload, with
different result digests are a :class:`Mismatch`: evidence anyone holding
the signers' certificates can check without trusting the guardian. The
verdict (:func:`judge`) is by majority: the original result against one
re-run, and a second re-run to break a disagreement; the agent outvoted
two to one is blamed. With no majority nobody is.

Sampling (:func:`sampled`) is the coordinator's, with randomness the agents
cannot predict: an agent that knew which results will be checked could lie
only about the others.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from .envelope import pack
from .errors import DecodeError
from .evidence import SignatureCheck, Signer, decode_statement, encode_statement, split_signed
from .fields import items, text

__all__ = ["RESULT_DOMAIN", "Claim", "Mismatch", "digest", "judge", "sampled"]

RESULT_DOMAIN = b"robeing.result.v1"


def digest(value: Any) -> str:
    """The SHA-256 of a value's msgpack form (how results and payloads are compared)."""
    return hashlib.sha256(pack(value)).hexdigest()


def sampled(rng: random.Random, rate: float) -> bool:
    """Whether to validate one more finished task at ``rate`` (0 never, 1 always)."""
    return rate > 0 and rng.random() < rate


@dataclass(frozen=True, slots=True)
class Claim:
    """A signed statement: ``computed_by`` got ``result`` for ``(type, payload)`` of ``task_id``."""

    signer: str
    task_id: str
    computed_by: str
    type: str
    payload: str  # digest
    result: str  # digest
    raw: bytes = b""

    @classmethod
    def make(
        cls, signer: str, task_id: str, computed_by: str, task_type: str, payload: Any,
        result: Any, sign: Signer,
    ) -> Claim:  # fmt: skip
        """Sign a claim about values (digested here)."""
        claim = cls(signer, task_id, computed_by, task_type, digest(payload), digest(result))
        content = [computed_by, task_type, claim.payload, claim.result]
        statement = encode_statement(RESULT_DOMAIN, signer, (task_id,), content)
        raw = msgpack.packb([statement, sign(statement)], use_bin_type=True)
        return cls(signer, task_id, computed_by, task_type, claim.payload, claim.result, raw)

    @classmethod
    def verify(cls, raw: Any, check: SignatureCheck) -> Claim:
        """Raises: DecodeError: malformed, or not signed by its signer."""
        if not isinstance(raw, bytes):
            raise DecodeError("a result claim is bytes")
        statement, signature = split_signed(raw, "result claim")
        st = decode_statement(statement, RESULT_DOMAIN)
        (task_id,) = items(list(st.slot), "claim slot", 1)
        computed_by, task_type, payload, result = items(st.content, "claim content", 4)
        claim = cls(
            text(st.signer, "signer", 128),
            text(task_id, "task id", 256),
            text(computed_by, "computed_by", 128),
            text(task_type, "type", 128),
            text(payload, "payload", 64),
            text(result, "result", 64),
            raw,
        )
        if not check(claim.signer, statement, signature):
            raise DecodeError(f"result claim of {claim.signer!r} does not verify")
        return claim


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Two verified claims about one task and input with different results."""

    first: Claim
    second: Claim

    @classmethod
    def of(cls, first: Claim, second: Claim) -> Mismatch:
        """Raises: ValueError: the claims are not about the same task and input, or agree."""
        same = (first.task_id, first.type, first.payload) == (
            second.task_id,
            second.type,
            second.payload,
        )
        if not same or first.result == second.result:
            raise ValueError("not a mismatch: another task or input, or the same result")
        return cls(first, second)

    def to_data(self) -> dict[str, Any]:
        return {"task_id": self.first.task_id, "claims": [self.first.raw, self.second.raw]}

    @classmethod
    def verify(cls, data: Mapping[str, Any], check: SignatureCheck) -> Mismatch:
        """Check evidence someone else produced.

        Raises:
            DecodeError: a claim does not verify, or they do not contradict each other.
        """
        raw = items(data.get("claims"), "claims", 2)
        try:
            return cls.of(Claim.verify(raw[0], check), Claim.verify(raw[1], check))
        except ValueError as exc:
            raise DecodeError(str(exc)) from None


def judge(results: Mapping[str, str]) -> str | None:
    """The agent to blame among those whose result digests are ``results``, by majority.

    Returns:
        The one agent outvoted when at least two others agree against it; None
        when all agree, or with no majority.
    """
    counts: dict[str, int] = {}
    for value in results.values():
        counts[value] = counts.get(value, 0) + 1
    majority = [v for v, n in counts.items() if n >= 2]
    if len(majority) != 1:
        return None
    outvoted = [agent for agent, value in results.items() if value != majority[0]]
    return outvoted[0] if len(outvoted) == 1 else None
