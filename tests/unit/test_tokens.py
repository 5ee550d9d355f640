"""Specification of gateway tokens bound to client certificates, and the rate limiter."""

from __future__ import annotations

import pytest

from robeing.protocol.evidence import ed25519_signer
from robeing.protocol.identity import Authority, Identity, TrustStore
from robeing.protocol.tokens import TokenBucket, TokenError, issue_token, verify_token

AUTHORITY = Authority.generate()
NOW = 1_700_000_000.0


def ident(agent_id: str = "alice", role: str = "client") -> Identity:
    return Identity.create(AUTHORITY, agent_id, role, NOW - 10)


def token(who: Identity, ttl: float = 60.0, at: float = NOW) -> str:
    return issue_token(who.certificate.raw, ed25519_signer(who.signing_key), at, ttl)


def check(tok: str, trust: TrustStore | None = None, now: float = NOW + 1) -> str:
    trust = trust or TrustStore(AUTHORITY.verify_key)
    return verify_token(tok, now, trust.check_certificate, trust.verify).client


def test_a_token_speaks_for_its_client_while_valid() -> None:
    alice = ident()
    assert check(token(alice)) == "alice"
    with pytest.raises(TokenError, match="expired"):
        check(token(alice, ttl=5), now=NOW + 6)


def test_a_token_is_worth_no_more_than_its_certificate() -> None:
    """Given a revoked client, or a certificate of another authority, Expect refusal."""
    alice = ident()
    revoked = TrustStore(AUTHORITY.verify_key, AUTHORITY.revocation_list(1, {"alice"}))
    with pytest.raises(TokenError, match="certificate"):
        check(token(alice), trust=revoked)
    other = Identity.create(Authority.generate(), "alice", "client", NOW)
    with pytest.raises(TokenError, match="certificate"):
        check(token(other))


def test_a_forged_or_altered_or_non_client_token_is_refused() -> None:
    alice, mallory = ident(), ident("mallory")
    forged = issue_token(alice.certificate.raw, ed25519_signer(mallory.signing_key), NOW, 60)
    with pytest.raises(TokenError, match="signature"):
        check(forged)
    prefix, body, sig = token(alice).split(".")
    with pytest.raises(TokenError):
        flipped = "A" if body[40] != "A" else "B"  # inside the certificate's bytes
        check(f"{prefix}.{body[:40]}{flipped}{body[41:]}.{sig}")
    with pytest.raises(TokenError, match="client"):
        check(token(ident("w1", "worker")))
    for junk in ("", "rbt1", "rbt1.x.y", "Bearer x", "rbt2." + token(alice)[5:]):
        with pytest.raises(TokenError, match=r"malformed|signature|certificate"):
            check(junk)


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a", 0.0) == pytest.approx(0.5)
    assert bucket.take("b", 0.0) == 0.0  # per client
    assert bucket.take("a", 0.6) == 0.0
