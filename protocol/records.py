"""What coordinators keep on the broker, readable only by whom it concerns.

Two things a coordinator stores outside any one process must not be readable
or forgeable by someone who can merely read or write broker queues:

* **results records** in ``robeing.results``: each record is an envelope of
  type ``task.record`` signed by the coordinator that wrote it, whose payload
  is a list of *entries*, one per submitter. An entry holds that submitter's
  finals encrypted under a fresh key; the key is wrapped twice — for the
  submitter (NaCl ``Box`` between the coordinators' group key and the
  submitter's key) and for the coordinators (``SecretBox`` under a key
  derived from the group key) — so a submitter reads its own finals, any
  coordinator reads them all after a failover, nobody else reads any;
* the **epoch record** in ``robeing.coordinator.epoch``: a signed
  ``coordinator.epoch`` envelope naming the epoch, the coordinator and its
  incarnation (the claim that goes with the lock).

The **coordinators' group identity** (agent id :data:`COORDINATORS`, role
coordinator, certified by the authority) is shared by every coordinator and
by nobody else: submissions are encrypted to it, so any active coordinator
can read them after a failover.

Invariants:
    * ``open_entries(seal_entries(x)) == x`` for the submitter and for the group.
    * An entry for another submitter, or altered in any byte, yields nothing
      for that reader (decryption fails; nothing partial comes out).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing

from .envelope import pack, unpack
from .errors import DecodeError
from .identity import Identity

__all__ = [
    "COORDINATORS",
    "EPOCH_TYPE",
    "MAX_EPOCH",
    "RECORD_TYPE",
    "GroupKeys",
    "open_for_group",
    "open_for_submitter",
    "seal_entries",
]

COORDINATORS = "@coordinators"
"""The coordinators' group identity (``@`` cannot start an agent id: no clash)."""
RECORD_TYPE = "task.record"
EPOCH_TYPE = "coordinator.epoch"
MAX_EPOCH = 2**53  # epochs are milliseconds: anything larger is not an epoch
_RECORDS_TAG = b"robeing.records.v1"
MAX_CACHED_BOXES = 10_000


@dataclass(frozen=True)
class GroupKeys:
    """The coordinators' group keys, as every coordinator holds them.

    Attributes:
        identity: the group identity (signs nothing in records; decrypts).
        secret: the symmetric key that wraps record keys for the group.
    """

    identity: Identity
    secret: nacl.secret.SecretBox
    # Submitter's Ed25519 key -> the Box between it and the group: deriving one
    # costs a key conversion and an X25519 exchange, once per submitter, not per record.
    boxes: dict[bytes, nacl.public.Box] = field(
        default_factory=dict, compare=False, repr=False
    )

    def box_for(self, verify_key: bytes) -> nacl.public.Box:
        """The Box between the group and the holder of ``verify_key`` (cached)."""
        box = self.boxes.get(verify_key)
        if box is None:
            if len(self.boxes) >= MAX_CACHED_BOXES:
                self.boxes.clear()  # bound memory against submitter churn
            box = self.boxes[verify_key] = nacl.public.Box(
                self.identity.box_key, _public(verify_key)
            )
        return box

    @classmethod
    def of(cls, identity: Identity) -> GroupKeys:
        seed = bytes(identity.signing_key)
        return cls(identity, nacl.secret.SecretBox(hashlib.sha256(_RECORDS_TAG + seed).digest()))


def _public(verify_key: bytes) -> nacl.public.PublicKey:
    return nacl.signing.VerifyKey(verify_key).to_curve25519_public_key()


def seal_entries(
    by_submitter: Mapping[str, list[Any]],
    submitter_keys: Mapping[str, bytes | None],
    group: GroupKeys,
) -> list[dict[str, Any]]:
    """One encrypted entry per submitter (see the module docstring).

    Args:
        by_submitter: each submitter's finals, as wire data.
        submitter_keys: each submitter's certified Ed25519 key (None if unknown:
            the entry is then readable by the coordinators only).
        group: the coordinators' keys.
    """
    entries = []
    for submitter, items in by_submitter.items():
        key = os.urandom(nacl.secret.SecretBox.KEY_SIZE)
        verify_key = submitter_keys.get(submitter)
        for_submitter = None
        if verify_key is not None:
            for_submitter = bytes(group.box_for(verify_key).encrypt(key))
        entries.append(
            {
                "s": submitter,
                "k": for_submitter,
                "g": bytes(group.secret.encrypt(key)),
                "d": bytes(nacl.secret.SecretBox(key).encrypt(pack(items))),
            }
        )
    return entries


def _entries(payload: Any) -> Iterable[dict[str, Any]]:
    if not isinstance(payload, list):
        raise DecodeError("a results record holds a list of entries")
    for entry in payload:
        if isinstance(entry, dict) and isinstance(entry.get("s"), str):
            yield entry


def _decrypt(entry: dict[str, Any], key: bytes) -> list[Any]:
    data = entry.get("d")
    if not isinstance(data, bytes):
        return []
    try:
        items = unpack(nacl.secret.SecretBox(key).decrypt(data))
    except (nacl.exceptions.CryptoError, DecodeError, ValueError):
        return []
    return items if isinstance(items, list) else []


def open_for_submitter(
    payload: Any, me: str, my_box_key: nacl.public.PrivateKey, group_verify_key: bytes
) -> list[Any]:
    """The finals (wire data) of ``me`` in a record's payload; [] when none are readable."""
    out: list[Any] = []
    box = nacl.public.Box(my_box_key, _public(group_verify_key))
    for entry in _entries(payload):
        wrapped = entry.get("k")
        if entry["s"] != me or not isinstance(wrapped, bytes):
            continue
        try:
            key = box.decrypt(wrapped)
        except (nacl.exceptions.CryptoError, ValueError):
            continue
        out += _decrypt(entry, key)
    return out


def open_for_group(payload: Any, group: GroupKeys) -> list[Any]:
    """Every final (wire data) in a record's payload, as a coordinator reads it."""
    out: list[Any] = []
    for entry in _entries(payload):
        wrapped = entry.get("g")
        if not isinstance(wrapped, bytes):
            continue
        try:
            key = group.secret.decrypt(wrapped)
        except (nacl.exceptions.CryptoError, ValueError):
            continue
        out += _decrypt(entry, key)
    return out
