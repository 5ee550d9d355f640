"""The one exception tree of robeing, plus the control-flow exceptions handlers raise.

``RobeingError`` is the root. Protocol failures carry a short, stable ``reason``
code: it is the value of the ``x-robeing-reason`` header on a dead-lettered
message and the key of the rejection counters, so operators can grep and
alert on it.

Errors cross the wire as data (``{"type": ..., "message": ...}``, see
:func:`error_to_data`) and are rebuilt only for allow-listed types; nothing is
ever pickled.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RobeingError(Exception):
    """Root of every error robeing raises on purpose."""


class ConfigError(RobeingError):
    """Settings, keys or command-line input are missing or invalid."""


class BrokerError(RobeingError):
    """The broker could not be reached or did not accept an operation."""


class PublishTimeout(BrokerError):
    """The broker did not confirm a publish within its timeout."""


class Unroutable(BrokerError):
    """A mandatory publish matched no queue (for example, unknown receiver)."""


class AckTimeout(RobeingError, TimeoutError):
    """The receiver's signed acknowledgement or reply did not arrive in time."""


class ProtocolError(RobeingError):
    """A message failed one of the receiver's checks (DESIGN §2).

    Attributes:
        reason: stable short code, used as dead-letter header and counter key.
    """

    reason: ClassVar[str] = "protocol"


class TooLarge(ProtocolError):
    reason = "too_large"


class DecodeError(ProtocolError):
    """Bytes are not a well-formed envelope (dramatiq's DecodeError idea)."""

    reason = "decode"

    def __init__(self, message: str, data: bytes | None = None) -> None:
        super().__init__(message)
        self.data = data


class VersionError(ProtocolError):
    reason = "version"


class UnknownSender(ProtocolError):
    reason = "unknown_sender"


class CertificateError(ProtocolError):
    """Certificate not signed by the authority, expired, revoked, or not the sender's."""

    reason = "certificate"


class Revoked(CertificateError):
    reason = "revoked"


class CertificateExpired(CertificateError):
    reason = "certificate_expired"


class SignatureError(ProtocolError):
    reason = "signature"


class StaleMessage(ProtocolError):
    """Timestamp outside the accepted window (too old or from the future)."""

    reason = "timestamp"


class Replay(ProtocolError):
    reason = "replay"


class Duplicate(ProtocolError):
    """A broker redelivery of a message already accepted.

    Attributes:
        message_id: the envelope id, so the receiver can tell a message it
            finished (acknowledge and drop the copy) from one it is still
            handling (the copy replaces the delivery that was lost).
    """

    reason = "duplicate"

    def __init__(self, message: str, message_id: str = "") -> None:
        super().__init__(message)
        self.message_id = message_id


class NotAllowed(ProtocolError):
    """The sender's role may not send this message type (or to this receiver)."""

    reason = "not_allowed"


class DecryptError(ProtocolError):
    reason = "decrypt"


class UnknownPeer(ConfigError):
    """No valid certificate is known for the agent a message is addressed to."""


# --- control flow: raised by handlers to steer the outcome ------------------


class Retry(RobeingError):
    """Ask for the work to be retried after ``delay`` seconds."""

    def __init__(self, message: str = "retry requested", delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class Reject(RobeingError):
    """Refuse the work permanently; ``reason`` is recorded with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RemoteError(RobeingError):
    """An error that happened on another agent, rebuilt from its data.

    Attributes:
        type: the remote exception's type name.
        data: the full error data as received.
    """

    def __init__(self, type_: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.data = data or {}


# Types that may be rebuilt as themselves on the receiving side; anything else
# becomes a RemoteError so a peer can never make us instantiate arbitrary types.
_REBUILDABLE: dict[str, type[RobeingError]] = {
    cls.__name__: cls
    for cls in (ConfigError, BrokerError, AckTimeout, Reject, NotAllowed, RobeingError)
}


def error_to_data(exc: BaseException) -> dict[str, Any]:
    """Describe an exception as plain data that can cross the wire.

    Returns:
        ``{"type": name, "message": str(exc)}`` plus ``reason`` for protocol
        errors and rejections.
    """
    data: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        data["reason"] = reason
    return data


def error_from_data(data: dict[str, Any]) -> RobeingError:
    """Rebuild an error sent by a peer; unknown types become :class:`RemoteError`."""
    type_ = str(data.get("type", "Error"))
    message = str(data.get("message", ""))
    cls = _REBUILDABLE.get(type_)
    if cls is Reject:
        return Reject(str(data.get("reason", message)))
    if cls is not None:
        return cls(message)
    return RemoteError(type_, message, data)
