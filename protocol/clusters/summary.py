"""A leader's summary of its cluster, and how the coordinator admits it (pure).

Wire contract (what a named cluster's members, its leader, the coordinator and
observers exchange; everything below is on the topic exchange ``robeing.events``
unless it names a queue):

* **Member heartbeats** — a member of a named cluster publishes its ordinary
  signed ``heartbeat`` envelope (same payload as a flat agent's) with routing key
  ``member.<cluster>.<role>.<id>`` (:func:`robeing.broker.topology.member_routing_key`),
  ``mandatory``. The coordinator's ``heartbeat.#`` binding does not match it.
  When no queue takes it (no live leader: the leader's queue is exclusive, so it
  disappears with the leader's connection), the broker returns it and the member
  publishes the same beat at once on ``heartbeat.<role>.<id>``: between terms the
  coordinator hears members directly, so no visibility is lost.
* **The leader's queue** — ``robeing.members.<cluster>.<leader-id>`` (exclusive,
  auto-delete), bound to ``member.<cluster>.#``.
* **Lock and term** — the leader holds the lock queue
  ``robeing.cluster.<cluster>.lock`` (the coordinator's lock primitive,
  ``BrokerOps.try_exclusive``: a quorum queue's single active consumer, see
  :mod:`robeing.broker.lease`); its term comes from the one-message queue
  ``robeing.cluster.<cluster>.term``, which holds the last term as a signed
  ``cluster.term`` record ``{cluster, term, leader, incarnation}``.
* **Summaries** — once per ``heartbeat_interval`` the leader publishes a signed,
  unencrypted ``cluster.summary`` envelope with routing key ``summary.<cluster>``;
  the coordinator's heartbeat queue binds ``summary.#``, and so do observers
  (``robeing status``, the gateway, the guardian), which list members from it.
  Payload (:class:`ClusterSummary`)::

      {"cluster": str, "term": int, "leader": str, "sent_at": float,
       "members": [{"id": str, "role": str, "at": float, "beat": <heartbeat map>,
                    "cert": <bytes: the member's certificate>}],
       "lost": [{"id": str, "reason": str}],
       "skills": {skill: {"agents": int, "capacity": int, "free": int}},
       "pool": {"total": <resources>, "free": <resources>, "largest": <resources>},
       "samples": [<bytes: a member's signed heartbeat envelope, as received>]}

  ``beat`` is the member's heartbeat payload without ``stats`` and with only the
  ``attempts`` and ``leader`` sections (what the leader score and observers read); ``at`` is
  the timestamp of the member's own envelope; ``role`` is its *certified* role
  as the leader verified it; ``cert`` is the member's certificate, from which the
  coordinator learns the key to encrypt assignments to a member it has never
  heard directly (it checks the certificate against the authority, and its id
  and role against the entry, only when it differs from the one it knows).
  ``skills`` counts live members per skill with their summed capacity and free
  slots (capacity - load). ``pool`` sums what live members contribute;
  ``largest`` is, per dimension, the most one member has free. ``lost`` names
  members the leader declared dead or gone since its previous summary.
  ``samples`` holds up to :data:`MAX_SAMPLES` raw member heartbeats, rotating
  through the members.
* **Size** — about 500 bytes a member (300 without the certificate), so a
  summary of 100 members is ~50 KB and the 1 MiB message limit holds ~2,000:
  clusters are meant for tens to a few hundred members (the scale target is
  100 clusters of 100). A summary lists at most :data:`MAX_MEMBERS`; a leader
  with more logs an error.
* **Nudge** — the coordinator sends the member the score elects a
  ``cluster.elect {cluster}`` message when the cluster has no live leader; it
  grants nothing: the member must still win the lock and take a term.

Invariants:
    * :class:`TermBook`: per cluster the highest admitted term never decreases;
      a summary is admitted only if its term is at least that highest term, its
      sender is its ``leader`` and a member of ``cluster``. So a leader whose
      term was superseded cannot have a summary folded by a coordinator that
      saw the newer term.
    * :meth:`TermBook.fresh` passes a member entry only when its ``at`` is newer
      than any folded before for that member, so a leader repeating an old
      beat never refreshes a silent member's liveness.
    * :meth:`ClusterSummary.from_data` raises nothing but
      :class:`~robeing.protocol.errors.DecodeError`, and bounds every list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..election import EpochFence, StaleEpoch
from ..errors import DecodeError, ProtocolError
from ..fields import count, ensure, finite, items, mapping, need, text
from ..heartbeat import Heartbeat
from ..records import MAX_EPOCH
from ..resources import DIMENSIONS, InvalidResources, Resources
from .names import cluster_name_problem

__all__ = [
    "MAX_MEMBERS",
    "MAX_SAMPLES",
    "SUMMARY_TYPE",
    "ClusterSummary",
    "MemberEntry",
    "NotLeader",
    "TermBook",
    "summarise",
]

SUMMARY_TYPE = "cluster.summary"
MAX_MEMBERS = 2_000
MAX_SAMPLES = 4
MAX_ID = 128
MAX_CERT = 1024  # a serialised certificate is ~200 bytes
# Heartbeat sections a summary keeps: the leader score reads ``attempts``; observers
# see who leads in the leader's own ``leader`` section.
KEPT_SECTIONS = ("attempts", "leader")


class NotLeader(ProtocolError):
    """A summary from an agent that is not a member of the cluster, or not its named leader."""

    reason = "not_leader"


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """One member as its leader last heard it."""

    agent_id: str
    role: str
    at: float
    beat: Heartbeat
    cert: bytes = b""  # the member's certificate as the leader verified it (may be empty)

    def to_data(self) -> dict[str, Any]:
        data = {"id": self.agent_id, "role": self.role, "at": self.at, "beat": self.beat.to_data()}
        if self.cert:
            data["cert"] = self.cert
        return data

    @classmethod
    def from_data(cls, data: Any) -> MemberEntry:
        """Raises: DecodeError: malformed."""
        data = mapping(data, "member")
        cert = data.get("cert", b"")
        if not isinstance(cert, bytes) or len(cert) > MAX_CERT:
            raise DecodeError(f"member cert: bytes of at most {MAX_CERT} expected")
        return cls(
            text(need(data, "id", str), "member id", MAX_ID),
            text(need(data, "role", str), "member role", 32),
            finite(need(data, "at", (int, float)), "member at"),
            Heartbeat.from_data(need(data, "beat", dict)),
            cert,
        )


def trim(beat: Heartbeat) -> Heartbeat:
    """What a summary carries of a heartbeat: no message counters, only the kept sections."""
    kept = {k: v for k, v in beat.extras.items() if k in KEPT_SECTIONS}
    return replace(beat, stats={}, extras=kept)


def _resources(data: Any, what: str) -> dict[str, float | int]:
    try:
        return Resources.from_mapping(data).to_mapping()
    except InvalidResources as exc:
        raise DecodeError(f"{what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class ClusterSummary:
    """One summary (see the module doc for the wire form)."""

    cluster: str
    term: int
    leader: str
    sent_at: float
    members: tuple[MemberEntry, ...] = ()
    lost: tuple[tuple[str, str], ...] = ()
    skills: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    pool: Mapping[str, Mapping[str, float | int]] = field(default_factory=dict)
    samples: tuple[bytes, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "term": self.term,
            "leader": self.leader,
            "sent_at": self.sent_at,
            "members": [m.to_data() for m in self.members],
            "lost": [{"id": a, "reason": r} for a, r in self.lost],
            "skills": {k: dict(v) for k, v in self.skills.items()},
            "pool": {k: dict(v) for k, v in self.pool.items()},
            "samples": list(self.samples),
        }

    @classmethod
    def from_data(cls, data: Any) -> ClusterSummary:
        """Read and validate a summary payload.

        Raises:
            DecodeError: malformed, or a list over its bound.
        """
        data = mapping(data, "summary")
        cluster = need(data, "cluster", str)
        ensure(cluster_name_problem(cluster) is None, f"invalid cluster {cluster!r:.80}")
        members = tuple(
            MemberEntry.from_data(m)
            for m in items(need(data, "members", list, []), "members")[: MAX_MEMBERS + 1]
        )
        ensure(len(members) <= MAX_MEMBERS, f"more than {MAX_MEMBERS} members")
        lost_raw = items(need(data, "lost", list, []), "lost")
        ensure(len(lost_raw) <= MAX_MEMBERS, f"more than {MAX_MEMBERS} lost members")
        lost = tuple(
            (
                text(need(mapping(x, "lost"), "id", str), "lost id", MAX_ID),
                text(need(x, "reason", str), "lost reason", 64),
            )
            for x in lost_raw
        )
        skills_raw = mapping(need(data, "skills", dict, {}), "skills")
        ensure(len(skills_raw) <= 4 * 64, "too many skills")
        skills = {
            text(k, "skill", 128): {
                n: count(need(mapping(v, "skill"), n, int, 0), n, high=2**31)
                for n in ("agents", "capacity", "free")
            }
            for k, v in skills_raw.items()
        }
        pool_raw = mapping(need(data, "pool", dict, {}), "pool")
        pool = {
            k: _resources(pool_raw.get(k, {}), f"pool {k}") for k in ("total", "free", "largest")
        }
        samples = tuple(items(need(data, "samples", list, []), "samples"))
        ensure(len(samples) <= MAX_SAMPLES, f"more than {MAX_SAMPLES} samples")
        ensure(all(isinstance(s, bytes) for s in samples), "a sample is not bytes")
        return cls(
            cluster=cluster,
            term=count(need(data, "term", int), "term", low=1, high=MAX_EPOCH),
            leader=text(need(data, "leader", str), "leader", MAX_ID),
            sent_at=finite(need(data, "sent_at", (int, float)), "sent_at"),
            members=members,
            lost=lost,
            skills=skills,
            pool=pool,
            samples=samples,
        )

    def entry(self, agent_id: str) -> MemberEntry | None:
        return next((m for m in self.members if m.agent_id == agent_id), None)


def summarise(
    cluster: str,
    term: int,
    leader: str,
    members: Iterable[MemberEntry],
    now: float,
    *,
    lost: Iterable[tuple[str, str]] = (),
    samples: Iterable[bytes] = (),
) -> ClusterSummary:
    """The summary of ``members`` (the live ones count towards skills and the pool)."""
    entries = tuple(sorted(members, key=lambda m: m.agent_id))[:MAX_MEMBERS]
    skills: dict[str, dict[str, int]] = {}
    total = {d: 0.0 for d in DIMENSIONS}
    largest = {d: 0.0 for d in DIMENSIONS}
    for m in entries:
        beat = m.beat
        if beat.state != "alive":
            continue
        for skill in beat.specializations:
            row = skills.setdefault(skill, {"agents": 0, "capacity": 0, "free": 0})
            row["agents"] += 1
            row["capacity"] += beat.capacity
            row["free"] += max(0, beat.capacity - beat.load)
        if beat.resources is not None:
            for d in DIMENSIONS:
                v = float(getattr(beat.resources, d))
                total[d] += v
                largest[d] = max(largest[d], v)

    def res(values: dict[str, float]) -> dict[str, float | int]:
        return {d: (v if d == "cpu" else int(v)) for d, v in values.items() if v}

    return ClusterSummary(
        cluster=cluster,
        term=term,
        leader=leader,
        sent_at=now,
        members=tuple(replace(m, beat=trim(m.beat)) for m in entries),
        lost=tuple(lost)[:MAX_MEMBERS],
        skills=skills,
        # The leader holds no leases (the coordinator's pool does): free is what
        # members contribute, and the coordinator subtracts its leases.
        pool={"total": res(total), "free": res(total), "largest": res(largest)},
        samples=tuple(samples)[:MAX_SAMPLES],
    )


class TermBook:
    """The coordinator's view of each named cluster's leadership, fenced by term.

    Counters (``counters``, shown in the coordinator's status): ``summaries``
    admitted, ``summaries_stale_epoch`` and ``summaries_not_leader`` refused,
    ``summary_entries_stale`` (not newer than the last folded for that member)
    and ``summary_entries_foreign`` (agents of another cluster) skipped.
    """

    def __init__(self) -> None:
        self.fences: dict[str, EpochFence] = {}
        self.leaders: dict[str, tuple[int, str, float]] = {}  # cluster -> (term, leader, seen)
        self._last_at: dict[str, float] = {}  # member -> `at` of the last entry folded
        self.counters: dict[str, int] = {}

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def admit(
        self, sender: str, sender_cluster: str | None, summary: ClusterSummary, now: float
    ) -> None:
        """Admit ``summary`` from ``sender``, in ``sender_cluster`` by the directory.

        Raises:
            NotLeader: the sender is not the summary's leader or not a member of its cluster.
            StaleEpoch: its term is older than the highest term admitted for the cluster.
        """
        if sender != summary.leader or sender_cluster != summary.cluster:
            self._count("summaries_not_leader")
            raise NotLeader(
                f"{sender} sent a summary of cluster {summary.cluster} naming leader "
                f"{summary.leader}, but is in cluster {sender_cluster}"
            )
        fence = self.fences.setdefault(summary.cluster, EpochFence())
        if not fence.admit(summary.term):
            self._count("summaries_stale_epoch")
            raise StaleEpoch(summary.term, fence.highest)
        self._count("summaries")
        self.leaders[summary.cluster] = (summary.term, sender, now)

    def fresh(self, entry: MemberEntry) -> bool:
        """Whether ``entry`` is newer than the last entry folded for its member (then noted)."""
        if entry.at <= self._last_at.get(entry.agent_id, float("-inf")):
            self._count("summary_entries_stale")
            return False
        if len(self._last_at) >= 10 * MAX_MEMBERS and entry.agent_id not in self._last_at:
            self._last_at.pop(next(iter(self._last_at)))
        self._last_at[entry.agent_id] = entry.at
        return True

    def foreign(self) -> None:
        self._count("summary_entries_foreign")

    def leader_of(self, cluster: str, now: float, silence: float) -> tuple[int, str] | None:
        """``(term, leader)`` of ``cluster`` if a summary came within ``silence`` seconds."""
        held = self.leaders.get(cluster)
        if held is None or now - held[2] > silence:
            return None
        return held[0], held[1]

    def deposed(self, leader: str) -> list[str]:
        """Forget ``leader``'s leadership (its connection closed); returns the clusters it led."""
        gone = [c for c, (_, who, _) in self.leaders.items() if who == leader]
        for c in gone:
            del self.leaders[c]
        return gone

    def term_of(self, cluster: str) -> int:
        fence = self.fences.get(cluster)
        return fence.highest if fence is not None else 0
