"""robeing's protocol: the language agents speak, and the pure state machines.

Nothing here does I/O or knows AMQP. The public API:

* wire format — :class:`Envelope`, :class:`Limits`, :class:`Codec` (seal/open
  with signatures, encryption and the receiver's checks), :class:`Heartbeat`;
* identities — :class:`Authority`, :class:`Identity`, :class:`Certificate`,
  :class:`TrustStore`, :class:`RevocationList`;
* roles — :data:`ROLES`, :func:`check_allowed`;
* errors — :class:`RobeingError` and its tree, :class:`Retry`, :class:`Reject`;
* state machines — scheduling (:class:`AgentRegistry`), performance,
  task graph (:class:`TaskGraph`), failure detection (:class:`HealthMonitor`),
  election and epoch fencing, resources, voting (:class:`Tally`) and PBFT
  (:class:`Replica`).
"""

from .codec import Codec, Opened
from .election import ClusterMembership, EpochFence
from .envelope import Envelope, Limits
from .errors import (
    AckTimeout,
    BrokerError,
    ConfigError,
    DecodeError,
    ProtocolError,
    Reject,
    RemoteError,
    Retry,
    RobeingError,
)
from .failure_detector import DetectorConfig, Health, HealthMonitor
from .heartbeat import Heartbeat
from .identity import Authority, Certificate, Identity, RevocationList, TrustStore
from .ledger import ResourceLedger
from .pbft import Replica
from .performance import PerformanceTracker
from .resources import Resources
from .roles import ROLES, check_allowed
from .scheduling import AgentInfo, AgentRegistry
from .taskgraph import TaskGraph, TaskSpec
from .voting import Proposal, Tally

__all__ = [
    "ROLES",
    "AckTimeout",
    "AgentInfo",
    "AgentRegistry",
    "Authority",
    "BrokerError",
    "Certificate",
    "ClusterMembership",
    "Codec",
    "ConfigError",
    "DecodeError",
    "DetectorConfig",
    "Envelope",
    "EpochFence",
    "Health",
    "HealthMonitor",
    "Heartbeat",
    "Identity",
    "Limits",
    "Opened",
    "PerformanceTracker",
    "Proposal",
    "ProtocolError",
    "Reject",
    "RemoteError",
    "Replica",
    "ResourceLedger",
    "Resources",
    "Retry",
    "RevocationList",
    "RobeingError",
    "Tally",
    "TaskGraph",
    "TaskSpec",
    "TrustStore",
    "check_allowed",
]  # fmt: skip
