"""A signed access policy that tightens the role → message-type table per deployment (pure).

The role table (:mod:`robeing.protocol.roles`) is the ceiling: what a role's
permissions allow, checked by every receiver's codec. A deployment may
forbid more — workers sending votes, say — with an :class:`AccessPolicy`:
per role, message types (exact, or a prefix ending in ``.``) it may no
longer send. A guardian signs it (domain ``robeing.policy.v1``) and
distributes it; every receiver verifies it (signed by an identity certified
as a guardian), keeps the newest valid one (:class:`PolicyBook`) and refuses
what it denies with reason ``policy``.

Precedence: the table first (a policy can only take away, never grant), then
the newest policy — the highest version, then the latest time, then the
greatest guardian id, so every receiver that saw the same policies applies
the same one. Two things no policy can take away, so that a mistaken policy
can always be replaced and the fleet keeps its health: heartbeats, and a
guardian's ``guardian.…`` messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .errors import DecodeError, NotAllowed
from .evidence import SignatureCheck, Signer, decode_statement, encode_statement, split_signed
from .fields import count, finite, items, mapping, strings, text
from .roles import ROLES

__all__ = ["POLICY_DOMAIN", "AccessPolicy", "PolicyBook", "PolicyDenied", "protected"]

POLICY_DOMAIN = b"robeing.policy.v1"
MAX_RULES = 64


class PolicyDenied(NotAllowed):
    """The deployment's access policy forbids the sender's role this message type."""

    reason = "policy"


def protected(role: str, message_type: str) -> bool:
    """What no policy may deny: heartbeats, and guardians' own messages."""
    return message_type == "heartbeat" or (
        role == "guardian" and message_type.startswith("guardian.")
    )


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Per role, the message types (or ``prefix.``) it may no longer send."""

    guardian: str
    version: int
    at: float
    deny: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def denies(self, role: str, message_type: str) -> bool:
        if protected(role, message_type):
            return False
        for rule in self.deny.get(role, ()):
            if message_type == rule or (rule.endswith(".") and message_type.startswith(rule)):
                return True
        return False

    def sign(self, signer: Signer) -> bytes:
        content = [self.version, self.at, {r: list(t) for r, t in self.deny.items()}]
        statement = encode_statement(POLICY_DOMAIN, self.guardian, ("policy",), content)
        return msgpack.packb([statement, signer(statement)], use_bin_type=True)

    @classmethod
    def parse_rules(cls, data: Any) -> dict[str, tuple[str, ...]]:
        """``{role: [type, ...]}`` checked: known roles, bounded lists of short types.

        Raises:
            DecodeError: an unknown role or a malformed rule.
        """
        rules = {}
        for role, types in mapping(data, "deny").items():
            if role not in ROLES:
                raise DecodeError(f"unknown role {role!r:.40} in the policy")
            rules[role] = strings(types, "deny", max_items=MAX_RULES, max_len=128)
        return rules

    @classmethod
    def verify(
        cls, raw: Any, check: SignatureCheck, role_of: Callable[[str], str | None]
    ) -> AccessPolicy:
        """Raises: DecodeError: malformed, not signed, or not by a certified guardian."""
        if not isinstance(raw, bytes) or len(raw) > 64 << 10:
            raise DecodeError("an access policy is at most 64 KiB of bytes")
        statement, signature = split_signed(raw, "access policy")
        st = decode_statement(statement, POLICY_DOMAIN)
        version, at, deny = items(st.content, "policy content", 3)
        policy = cls(
            text(st.signer, "guardian", 128),
            count(version, "version", low=1),
            finite(at, "at"),
            cls.parse_rules(deny),
        )
        if role_of(policy.guardian) != "guardian":
            raise DecodeError(f"{policy.guardian!r} is not a certified guardian")
        if not check(policy.guardian, statement, signature):
            raise DecodeError(f"access policy of {policy.guardian!r} does not verify")
        return policy

    def rank(self) -> tuple[int, float, str]:
        return (self.version, self.at, self.guardian)


class PolicyBook:
    """The newest valid access policy a receiver applies (none: the table alone)."""

    def __init__(self) -> None:
        self.current: AccessPolicy | None = None
        self.raw: bytes | None = None

    def apply(self, policy: AccessPolicy, raw: bytes) -> bool:
        """Take ``policy`` if it is newer than the one in force; returns whether it was."""
        if self.current is not None and self.current.rank() >= policy.rank():
            return False
        self.current, self.raw = policy, raw
        return True

    def check(self, role: str, message_type: str) -> None:
        """Raises: PolicyDenied: the policy in force denies ``role`` this type."""
        policy = self.current
        if policy is not None and policy.denies(role, message_type):
            raise PolicyDenied(
                f"access policy v{policy.version} of {policy.guardian}: role {role!r} may not "
                f"send {message_type!r}"
            )

    def describe(self) -> dict[str, Any] | None:
        p = self.current
        if p is None:
            return None
        return {"version": p.version, "guardian": p.guardian, "at": p.at, "deny": dict(p.deny)}
