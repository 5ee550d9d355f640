"""Bearer tokens bound to a client certificate, and per-client rate limits (pure).

A gateway token (``robeing keys token --id CLIENT``) is::

    rbt1.<base64url(msgpack([certificate, issued_at, expires_at]))>.<base64url(signature)>

signed with the *client's own* key (Ed25519, domain ``robeing.token.v1``)
and carrying its authority-signed certificate. A gateway accepts it only
while that certificate is valid — signed by the authority, not expired, not
revoked (the trust store's revocation list) and of the ``client`` role — and
the token itself is not expired. So a token is never worth more than its
certificate: revoking the client, or letting its certificate lapse, ends
every token it signed, and a stolen token cannot be re-issued without the
client's private key.

:class:`TokenBucket` limits each client's request rate: ``rate`` per second
sustained, ``burst`` at once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from .errors import CertificateError, DecodeError
from .fields import finite, items
from .identity import Certificate

__all__ = ["PREFIX", "TOKEN_DOMAIN", "TokenBucket", "TokenError", "issue_token", "verify_token"]

PREFIX = "rbt1"
TOKEN_DOMAIN = b"robeing.token.v1"
MAX_TOKEN = 4096
MAX_TTL = 366 * 86400.0


class TokenError(DecodeError):
    """The token is malformed, forged, expired, or its certificate is not valid."""

    reason = "token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(certificate: bytes, sign: Callable[[bytes], bytes], now: float, ttl: float) -> str:
    """A token for the holder of ``certificate`` (``sign`` signs with its key).

    Raises:
        ValueError: ``ttl`` outside ``(0, MAX_TTL]``.
    """
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"token ttl must be in (0, {MAX_TTL:g}] seconds")
    body = msgpack.packb([certificate, now, now + ttl], use_bin_type=True)
    return f"{PREFIX}.{_b64(body)}.{_b64(sign(TOKEN_DOMAIN + body))}"


@dataclass(frozen=True, slots=True)
class Bearer:
    """Who a valid token speaks for."""

    client: str
    key_id: str
    expires_at: float


def verify_token(
    token: str,
    now: float,
    check_certificate: Callable[[bytes, float], Certificate],
    verify: Callable[[Certificate, bytes, bytes], None],
) -> Bearer:
    """Check a token and the certificate it carries.

    Args:
        check_certificate: the trust store's check (authority, expiry, revocation).
        verify: raises unless the certificate's key signed the bytes.

    Raises:
        TokenError: anything wrong, with a message safe to show the caller.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise TokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError(f"malformed token (expected {PREFIX}.<body>.<signature>)")
    try:
        body, signature = _unb64(parts[1]), _unb64(parts[2])
        fields = items(msgpack.unpackb(body, raw=False, max_bin_len=MAX_TOKEN), "token", 3)
    except (binascii.Error, ValueError, msgpack.ExtraData, msgpack.FormatError, DecodeError):
        raise TokenError("malformed token") from None
    raw, issued, expires = fields
    if not isinstance(raw, bytes):
        raise TokenError("malformed token")
    try:
        cert = check_certificate(raw, now)
    except CertificateError as exc:
        raise TokenError(f"the token's certificate is not valid: {exc}") from None
    if cert.role != "client":
        raise TokenError("tokens are for client identities")
    try:
        verify(cert, TOKEN_DOMAIN + body, signature)
        issued_at, expires_at = finite(issued, "issued"), finite(expires, "expires")
    except Exception:
        raise TokenError("the token's signature does not verify") from None
    if not issued_at <= now < expires_at or expires_at - issued_at > MAX_TTL:
        raise TokenError("the token has expired")
    return Bearer(cert.agent_id, cert.key_id, expires_at)


class TokenBucket:
    """Per-key token buckets: ``rate`` requests per second, ``burst`` at once.

    Bounded: at most ``max_keys`` buckets, the least recently used forgotten
    first (a forgotten key starts again with a full bucket).
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float) -> float:
        """Spend one request of ``key``.

        Returns:
            0 when allowed, else the seconds until one is.
        """
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.pop(next(iter(self._buckets)))
        return wait
