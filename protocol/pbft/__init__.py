"""PBFT (Castro & Liskov, OSDI 1999): the messages, the checks and the replica.

The package is split by what each part is:

* :mod:`.messages` — the wire: signed message classes, :func:`sign`, the
  digests, :func:`encode_message` / :func:`decode_message`;
* :mod:`.certificates` — what counts as a valid message and quorum
  (:class:`Cluster`);
* :mod:`.actions` — what the replica asks its host to do;
* :mod:`.replica` — the :class:`Replica` state machine;
* :mod:`.groups` — which agents form a group (:class:`GroupSpec`).

Nothing here does I/O; ``agents/bft_replica.py`` hosts a replica on the
broker and ``agents/bft.py`` is the client.
"""

from .actions import (
    Action,
    Broadcast,
    Decide,
    EnterView,
    FetchState,
    ReportEvidence,
    Send,
    SetTimer,
)
from .certificates import Cluster
from .decided import Decided, verify_transfer
from .groups import GroupSpec, group_key, parse_groups
from .messages import (
    GENESIS_DIGEST,
    NULL_DIGEST,
    PBFT_DOMAIN,
    Checkpoint,
    Commit,
    Message,
    NewView,
    Prepare,
    PreparedCertificate,
    PrePrepare,
    Request,
    SignedMessage,
    Status,
    ViewChange,
    chain_digest,
    decode_message,
    encode_message,
    request_digest,
    sign,
)
from .replica import Replica

__all__ = [
    "GENESIS_DIGEST",
    "NULL_DIGEST",
    "PBFT_DOMAIN",
    "Action",
    "Broadcast",
    "Checkpoint",
    "Cluster",
    "Commit",
    "Decide",
    "Decided",
    "EnterView",
    "FetchState",
    "GroupSpec",
    "Message",
    "NewView",
    "PrePrepare",
    "Prepare",
    "PreparedCertificate",
    "Replica",
    "ReportEvidence",
    "Request",
    "Send",
    "SetTimer",
    "SignedMessage",
    "Status",
    "ViewChange",
    "chain_digest",
    "decode_message",
    "encode_message",
    "group_key",
    "parse_groups",
    "request_digest",
    "sign",
    "verify_transfer",
]
