"""The cluster directory: definitions folded from the coordinator's signed records.

Named clusters are defined by records a coordinator writes, signed, to the
stream ``robeing.coordinator.clusters`` (replicated by the broker with Raft,
so definitions outlive a coordinator and a broker restart). Every coordinator
that becomes active folds the whole stream, in order, into a
:class:`ClusterDirectory`; then it applies each record it writes itself.
Record payloads (:class:`ClusterRecord`):

* ``form``: ``name``, ``purpose``, ``skills``, ``members`` — a new cluster.
* ``dissolve``: ``name`` — its members return to the default cluster.
* ``leave``: ``name``, ``agent`` — one member returns to the default cluster.

Invariants:
    * Folding is deterministic: the same records in the same order give the
      same directory, whoever folds them.
    * A name is defined at most once at a time: a ``form`` of a name that is
      defined is ignored (counted in ``ignored``); a name may be formed again
      after it was dissolved.
    * Every agent is assigned to at most one cluster. An agent the directory
      names (``assigned``) belongs to that cluster whatever its own
      ``CLUSTER_ID`` says; an agent it never named belongs to the cluster it
      announces. Leaving or a dissolve assigns the agent to ``default``.
    * ``default`` is never a defined cluster (the coordinator leads it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import DecodeError
from ..fields import finite, need, strings, text
from .names import DEFAULT_CLUSTER, cluster_name_problem

__all__ = ["RECORD_TYPE", "ClusterDef", "ClusterDirectory", "ClusterRecord"]

RECORD_TYPE = "cluster.record"
MAX_PURPOSE = 500
MAX_MEMBERS = 10_000
MAX_SKILLS = 64
OPS = ("form", "dissolve", "leave")


@dataclass(frozen=True, slots=True)
class ClusterDef:
    """A named cluster as formed: its purpose, the skills it was formed for, its members."""

    name: str
    purpose: str
    skills: tuple[str, ...]
    members: tuple[str, ...]
    formed_at: float
    formed_by: str

    def to_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "purpose": self.purpose,
            "skills": list(self.skills),
            "members": list(self.members),
            "formed_at": self.formed_at,
            "formed_by": self.formed_by,
        }


@dataclass(frozen=True, slots=True)
class ClusterRecord:
    """One change to the directory, as stored (signed) in the clusters stream.

    Attributes:
        op: ``form``, ``dissolve`` or ``leave``.
        name: the cluster. at: when it was decided. by: who asked for it.
        purpose, skills, members: of a ``form``. agent: of a ``leave``.
    """

    op: str
    name: str
    at: float
    by: str
    purpose: str = ""
    skills: tuple[str, ...] = ()
    members: tuple[str, ...] = field(default=())
    agent: str = ""

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "name": self.name, "at": self.at, "by": self.by}
        if self.op == "form":
            data.update(purpose=self.purpose, skills=list(self.skills), members=list(self.members))
        if self.op == "leave":
            data["agent"] = self.agent
        return data

    @staticmethod
    def from_data(data: Any) -> ClusterRecord:
        """Read a stored record.

        Raises:
            DecodeError: malformed, an unknown op, or an invalid name.
        """
        op = need(data, "op", str)
        if op not in OPS:
            raise DecodeError(f"unknown cluster record op {op!r:.40}")
        name = need(data, "name", str)
        if (problem := cluster_name_problem(name)) is not None or name == DEFAULT_CLUSTER:
            raise DecodeError(problem or "the default cluster is not defined by records")
        return ClusterRecord(
            op=op,
            name=name,
            at=finite(need(data, "at", (int, float)), "at"),
            by=text(need(data, "by", str), "by", 128),
            purpose=text(need(data, "purpose", str, ""), "purpose", MAX_PURPOSE),
            skills=strings(need(data, "skills", list, []), "skills", max_items=MAX_SKILLS),
            members=strings(need(data, "members", list, []), "members", max_items=MAX_MEMBERS),
            agent=text(need(data, "agent", str, ""), "agent", 128),
        )


class ClusterDirectory:
    """The defined clusters and which agent each definition assigns where."""

    def __init__(self, records: Iterable[ClusterRecord] = ()) -> None:
        self.clusters: dict[str, ClusterDef] = {}
        self.assigned: dict[str, str] = {}  # agent -> cluster (default after leaving)
        self.applied = 0
        self.ignored = 0  # records that changed nothing (a form of a defined name…)
        for record in records:
            self.apply(record)

    def apply(self, record: ClusterRecord) -> bool:
        """Fold one record in; returns whether it changed the directory."""
        self.applied += 1
        changed = self._apply(record)
        if not changed:
            self.ignored += 1
        return changed

    def _apply(self, r: ClusterRecord) -> bool:
        if r.op == "form":
            if r.name in self.clusters:
                return False
            members = tuple(dict.fromkeys(r.members))
            for agent in members:
                old = self.assigned.get(agent)
                if old in self.clusters and old != r.name:
                    self._drop_member(old, agent)
                self.assigned[agent] = r.name
            self.clusters[r.name] = ClusterDef(r.name, r.purpose, r.skills, members, r.at, r.by)
            return True
        cluster = self.clusters.get(r.name)
        if cluster is None:
            return False
        if r.op == "dissolve":
            del self.clusters[r.name]
            for agent in cluster.members:
                self.assigned[agent] = DEFAULT_CLUSTER
            return True
        if r.agent not in cluster.members:  # leave
            return False
        self._drop_member(r.name, r.agent)
        self.assigned[r.agent] = DEFAULT_CLUSTER
        return True

    def _drop_member(self, name: str, agent: str) -> None:
        c = self.clusters[name]
        members = tuple(m for m in c.members if m != agent)
        self.clusters[name] = ClusterDef(
            c.name, c.purpose, c.skills, members, c.formed_at, c.formed_by
        )

    def cluster_of(self, agent_id: str, announced: str) -> str:
        """The cluster ``agent_id`` belongs to, given the one it ``announced``."""
        return self.assigned.get(agent_id, announced)

    def names(self, announced: Mapping[str, str] | None = None) -> list[str]:
        """Defined clusters, and static ones some live agent announces (sorted, no default)."""
        found = set(self.clusters)
        for agent, cluster in (announced or {}).items():
            found.add(self.cluster_of(agent, cluster))
        found.discard(DEFAULT_CLUSTER)
        return sorted(found)
