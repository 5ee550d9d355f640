"""Format conversion on request.

Handles ``messenger.convert`` requests: ``{"data": ..., "from": F, "to": T}``
with the formats of :mod:`robeing.agents.formats` (``json`` text, ``msgpack``
bytes, ``csv`` text with a header row, ``records``). Bad input is refused with
a ``Reject`` that names the problem; the sender gets it as an error.
"""

from __future__ import annotations

from typing import Any

from ....protocol.errors import Reject
from ...context import Message
from ...formats import convert


def handle_convert(msg: Message) -> Any:
    """Convert ``data`` between formats (see :func:`robeing.agents.formats.convert`)."""
    p = msg.payload
    if not isinstance(p, dict) or "data" not in p:
        raise Reject("convert needs {'data': ..., 'from': FORMAT, 'to': FORMAT}")
    return convert(p["data"], str(p.get("from", "json")), str(p.get("to", "json")))
