"""Resource pooling: agents contribute capacity, requests are placed on it.

Each agent contributes cpu (cores), memory and storage (bytes) and bandwidth
(bytes/s). :class:`ResourceLedger` places requests on contributors, best-fit
(pack) or spread (balance), on one agent or, when allowed and needed, split
across several in parts shaped like the request. Each allocation has a
:class:`Holder`: a task's reservation, or a pool lease; the coordinator's
sweep of finished tasks' reservations looks at the first kind only.

Invariants:
    * Never over-commit by placing: a part is placed only within what its
      agent has free (contributed minus committed). Only a shrink of the
      contribution can leave an agent with more committed than contributed;
      it is then *shrinking*: its live allocations stay until they end, and
      nothing new is placed on it until committed is back under the new
      contribution.
    * Exact accounting: quantities are integers (cpu in millicores; requests
      are rounded up, contributions down), so releasing an allocation restores
      availability exactly, with no floating-point drift.
    * An allocation's parts add up exactly to its (rounded) request, one part
      per agent, none empty.
    * Idempotent by (holder kind, request id): allocating a live request
      again returns the same allocation; with other resources or constraints
      it is refused. A task and a lease may share an id without colliding.
    * An allocation lives until released, or until an agent it touches
      withdraws (it is gone: dead, left, quarantined); then all its parts are
      freed and its id is returned so the work can be placed again (under a
      new allocation id, so the stale one can never release the new one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction

from .resources import (
    DIMENSIONS,
    ZERO,
    ConflictingRequest,
    InsufficientResources,
    InvalidResources,
    Resources,
    Vec,
    from_vec,
    to_vec,
    vec_add,
    vec_fits,
    vec_sub,
)

__all__ = ["Allocation", "Constraints", "Holder", "Part", "ResourceLedger", "Strategy"]

_Candidate = tuple[str, Vec, Vec]  # (agent id, free, capacity)


class Holder(StrEnum):
    """Who holds an allocation, which says how it ends.

    ``TASK``: a task's reservation; it ends with the task's attempt, and the
    coordinator's sweep frees one whose task no longer runs. ``LEASE``: a
    pool lease of a client or an agent; it ends on release, TTL or the
    holder's death (:mod:`robeing.protocol.leases`), never by the task sweep.
    """

    TASK = "task"
    LEASE = "lease"


class Strategy(StrEnum):
    """How agents are chosen: pack them tight, or balance the load."""

    BEST_FIT = "best_fit"
    SPREAD = "spread"


@dataclass(frozen=True, slots=True)
class Constraints:
    """Placement constraints of one request.

    Attributes:
        strategy: BEST_FIT leaves the least free on the chosen agent (and
            splits over the fewest agents); SPREAD leaves the most (and splits
            evenly).
        allow_split: place on several agents when no single one fits.
        max_agents: upper bound on the number of parts when splitting.
        agents: if given, only these agents are candidates.
        exclude: agents that are never candidates.

    Raises:
        InvalidResources: on construction, if ``strategy`` is not a
            :class:`Strategy` or ``max_agents`` is below 1.
    """

    strategy: Strategy = Strategy.BEST_FIT
    allow_split: bool = False
    max_agents: int | None = None
    agents: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, Strategy):
            raise InvalidResources(f"strategy must be a Strategy, got {self.strategy!r}")
        if self.max_agents is not None and self.max_agents < 1:
            raise InvalidResources("max_agents must be >= 1")


@dataclass(frozen=True, slots=True)
class Part:
    """The share of an allocation reserved on one agent."""

    agent_id: str
    resources: Resources


@dataclass(frozen=True, slots=True)
class Allocation:
    """Resources reserved for one request, in parts on one or more agents."""

    allocation_id: str
    request_id: str
    requested: Resources
    parts: tuple[Part, ...]
    constraints: Constraints
    holder: Holder = Holder.TASK

    @property
    def agents(self) -> tuple[str, ...]:
        """The agents holding a part, in part order."""
        return tuple(p.agent_id for p in self.parts)


@dataclass(slots=True)
class _Pool:
    capacity: Vec
    used: Vec = ZERO
    allocations: dict[str, None] = field(default_factory=dict)  # ids touching it, oldest first

    def free(self) -> Vec:
        # Clamped: a shrinking agent (more committed than contributed) has nothing free.
        c, u = self.capacity, self.used
        return (max(c[0] - u[0], 0), max(c[1] - u[1], 0), max(c[2] - u[2], 0), max(c[3] - u[3], 0))

    def shrinking(self) -> bool:
        return not vec_fits(self.used, self.capacity)


@dataclass(slots=True)
class _Live:
    allocation: Allocation
    need: Vec
    parts: list[tuple[str, Vec]]


class ResourceLedger:
    """Who contributes what, and which request holds which part of it."""

    def __init__(self) -> None:
        self._pools: dict[str, _Pool] = {}
        self._live: dict[str, _Live] = {}  # allocation id -> allocation, oldest first
        self._by_request: dict[tuple[Holder, str], str] = {}
        self._seq = 0

    def contribute(self, agent_id: str, capacity: Resources) -> bool:
        """Set what ``agent_id`` offers to the pool (adding the agent if new).

        Shrinking below what is committed on the agent drops nothing: its
        allocations stay until they end, and the new contribution takes
        effect as they do (the agent is :meth:`shrinking` meanwhile, with
        nothing free). Offering nothing, with nothing committed, takes the
        agent out of the pool; with something committed, it stays until the
        last allocation on it ends.

        Args:
            agent_id: the contributor.
            capacity: its total capacity (cpu rounded down to millicores).

        Returns:
            Whether the agent is shrinking now.
        """
        vec = to_vec(capacity, up=False)
        pool = self._pools.get(agent_id)
        if vec == ZERO and (pool is None or not pool.allocations):
            self._pools.pop(agent_id, None)
            return False
        if pool is None:
            pool = self._pools[agent_id] = _Pool(ZERO)
        pool.capacity = vec
        return pool.shrinking()

    def withdraw(self, agent_id: str) -> list[str]:
        """Remove ``agent_id`` and invalidate every allocation with a part on it.

        All parts of those allocations, on any agent, are freed.

        Returns:
            Ids of the invalidated allocations, oldest first ([] if unknown).
        """
        pool = self._pools.pop(agent_id, None)
        if pool is None:
            return []
        affected = list(pool.allocations)
        for allocation_id in affected:
            self._drop(allocation_id)
        return affected

    def allocate(
        self,
        request_id: str,
        request: Resources,
        constraints: Constraints | None = None,
        holder: Holder = Holder.TASK,
    ) -> Allocation:
        """Reserve ``request`` for ``request_id``.

        Args:
            request_id: idempotency key of the request (per holder kind).
            request: what it needs (cpu rounded up to millicores).
            constraints: placement constraints (default: best fit, no split).
            holder: a task's reservation or a lease.

        Returns:
            The allocation; the existing one if ``request_id`` is live already.

        Raises:
            InvalidResources: if ``request`` is zero.
            ConflictingRequest: if ``request_id`` is live with other resources
                or constraints.
            InsufficientResources: if the eligible agents cannot hold it.
        """
        constraints = constraints or Constraints()
        need = to_vec(request, up=True)
        existing = self._by_request.get((holder, request_id))
        if existing is not None:
            live = self._live[existing]
            if live.need != need or live.allocation.constraints != constraints:
                raise ConflictingRequest(f"request {request_id!r} is live with other terms")
            return live.allocation
        if need == ZERO:
            raise InvalidResources(f"request {request_id!r} asks for nothing")
        candidates = [
            (agent_id, pool.free(), pool.capacity)
            for agent_id, pool in self._pools.items()
            if agent_id not in constraints.exclude
            and (constraints.agents is None or agent_id in constraints.agents)
        ]
        parts = self._place_whole(need, candidates, constraints.strategy)
        if parts is None and constraints.allow_split:
            parts = self._place_split(need, candidates, constraints)
        if parts is None:
            total = ZERO
            for _, free, _ in candidates:
                total = vec_add(total, free)
            raise InsufficientResources(request_id, from_vec(need), from_vec(total))
        return self._install(request_id, need, parts, constraints, holder)

    def restore(self, request_id: str, holder: Holder, parts: Sequence[Part]) -> Allocation:
        """Install an allocation granted earlier (by a coordinator before a failover).

        The parts are taken as recorded, without checking room: they were
        placed within what their agents had free then. An agent not (yet)
        contributing is added with nothing contributed — shrinking, so
        nothing new goes there until its heartbeat announces its contribution.

        Returns:
            The allocation; the live one if ``request_id`` is live already.

        Raises:
            InvalidResources: no parts, an empty part, or one agent twice.
        """
        existing = self._by_request.get((holder, request_id))
        if existing is not None:
            return self._live[existing].allocation
        vecs = [(p.agent_id, to_vec(p.resources, up=True)) for p in parts]
        if not vecs or any(v == ZERO for _, v in vecs) or len({a for a, _ in vecs}) < len(vecs):
            raise InvalidResources(
                f"request {request_id!r}: parts must be non-empty, one per agent"
            )
        need = ZERO
        for _, v in vecs:
            need = vec_add(need, v)
        for agent_id, _ in vecs:
            self._pools.setdefault(agent_id, _Pool(ZERO))
        return self._install(request_id, need, vecs, Constraints(allow_split=len(vecs) > 1), holder)

    def _install(
        self,
        request_id: str,
        need: Vec,
        parts: list[tuple[str, Vec]],
        constraints: Constraints,
        holder: Holder,
    ) -> Allocation:
        self._seq += 1
        allocation = Allocation(
            f"{request_id}#{self._seq}",
            request_id,
            from_vec(need),
            tuple(Part(a, from_vec(v)) for a, v in parts),
            constraints,
            holder,
        )
        for agent_id, v in parts:
            pool = self._pools[agent_id]
            pool.used = vec_add(pool.used, v)
            pool.allocations[allocation.allocation_id] = None
        self._live[allocation.allocation_id] = _Live(allocation, need, parts)
        self._by_request[(holder, request_id)] = allocation.allocation_id
        return allocation

    def release(self, allocation_id: str) -> bool:
        """Free an allocation. Releasing twice, or an invalidated one, is a no-op.

        Returns:
            True if the allocation was live.
        """
        if allocation_id not in self._live:
            return False
        self._drop(allocation_id)
        return True

    def get(self, allocation_id: str) -> Allocation | None:
        """The live allocation with this id, or None."""
        live = self._live.get(allocation_id)
        return live.allocation if live else None

    def release_request(self, request_id: str, holder: Holder = Holder.TASK) -> bool:
        """Free the live allocation of ``request_id`` (of that holder kind), if any.

        Returns:
            True if there was one.
        """
        allocation_id = self._by_request.get((holder, request_id))
        return allocation_id is not None and self.release(allocation_id)

    def fits(self, agent_id: str, request: Resources) -> bool:
        """Whether ``request`` fits whole in what ``agent_id`` has free now."""
        pool = self._pools.get(agent_id)
        return pool is not None and vec_fits(to_vec(request, up=True), pool.free())

    def allocation_for(self, request_id: str, holder: Holder = Holder.TASK) -> Allocation | None:
        """The live allocation of ``request_id`` (of that holder kind), or None."""
        allocation_id = self._by_request.get((holder, request_id))
        return self._live[allocation_id].allocation if allocation_id else None

    def allocations(self, holder: Holder | None = None) -> list[Allocation]:
        """The live allocations (of ``holder`` kind, if given), oldest first."""
        return [
            live.allocation
            for live in self._live.values()
            if holder is None or live.allocation.holder is holder
        ]

    def shrinking(self, agent_id: str) -> bool:
        """Whether more is committed on ``agent_id`` than it contributes now."""
        pool = self._pools.get(agent_id)
        return pool is not None and pool.shrinking()

    def agents(self) -> list[str]:
        """Contributing agents, in order of first contribution."""
        return list(self._pools)

    def capacity(self, agent_id: str | None = None) -> Resources:
        """What ``agent_id`` (or, if None, everyone) contributes."""
        return from_vec(self._sum(agent_id, lambda p: p.capacity))

    def allocated(self, agent_id: str | None = None) -> Resources:
        """What is committed (reserved or leased) on ``agent_id`` (or, if None, on everyone)."""
        return from_vec(self._sum(agent_id, lambda p: p.used))

    def available(self, agent_id: str | None = None) -> Resources:
        """What is free on ``agent_id`` (or, if None, in total)."""
        return from_vec(self._sum(agent_id, _Pool.free))

    def utilization(self, agent_id: str | None = None) -> dict[str, float]:
        """Reserved fraction per dimension (0.0 where nothing is contributed)."""
        cap = self._sum(agent_id, lambda p: p.capacity)
        used = self._sum(agent_id, lambda p: p.used)
        return {d: (u / c if c else 0.0) for d, u, c in zip(DIMENSIONS, used, cap, strict=True)}

    def _sum(self, agent_id: str | None, get: Callable[[_Pool], Vec]) -> Vec:
        if agent_id is not None:
            pool = self._pools.get(agent_id)
            return get(pool) if pool else ZERO
        total = ZERO
        for pool in self._pools.values():
            total = vec_add(total, get(pool))
        return total

    def _drop(self, allocation_id: str) -> None:
        live = self._live.pop(allocation_id)
        del self._by_request[(live.allocation.holder, live.allocation.request_id)]
        for agent_id, v in live.parts:
            pool = self._pools.get(agent_id)
            if pool is not None:  # absent while its own withdraw is in progress
                pool.used = vec_sub(pool.used, v)
                del pool.allocations[allocation_id]
                if pool.capacity == ZERO and not pool.allocations:
                    del self._pools[agent_id]  # it offered nothing and now holds nothing

    @staticmethod
    def _place_whole(
        need: Vec, candidates: list[_Candidate], strategy: Strategy
    ) -> list[tuple[str, Vec]] | None:
        best: tuple[float, str] | None = None
        for agent_id, free, cap in candidates:
            if not vec_fits(need, free):
                continue
            # Fraction of the agent's capacity left free in the requested
            # dimensions: small = tight fit, large = lightly loaded.
            left = sum((f - n) / c for n, f, c in zip(need, free, cap, strict=True) if n)
            key = (left if strategy is Strategy.BEST_FIT else -left, agent_id)
            if best is None or key < best:
                best = key
        return None if best is None else [(best[1], need)]

    @staticmethod
    def _place_split(
        need: Vec, candidates: list[_Candidate], constraints: Constraints
    ) -> list[tuple[str, Vec]] | None:
        # Each part is a fraction of the request; an agent can hold at most
        # min(free/need) of it over the requested dimensions.
        shares = []
        for agent_id, free, _ in candidates:
            share = min(Fraction(f, n) for n, f in zip(need, free, strict=True) if n)
            if share > 0:
                shares.append((min(share, Fraction(1)), agent_id))
        shares.sort(key=lambda s: (-s[0], s[1]))
        shares = shares[: constraints.max_agents]
        remaining = Fraction(1)
        taken: list[tuple[str, Fraction]] = []
        if constraints.strategy is Strategy.BEST_FIT:
            for share, agent_id in shares:  # largest first: fewest parts
                if remaining == 0:
                    break
                take = min(share, remaining)
                taken.append((agent_id, take))
                remaining -= take
        else:
            for i, (share, agent_id) in enumerate(reversed(shares)):  # water-filling
                take = min(share, remaining / (len(shares) - i))
                taken.append((agent_id, take))
                remaining -= take
        if remaining > 0:
            return None
        # Cumulative flooring: parts sum exactly to ``need`` and each part is at
        # most ceil(need * take) <= free, because need * take <= free is integral.
        parts: list[tuple[str, Vec]] = []
        done = Fraction(0)
        for agent_id, take in sorted(taken, key=lambda t: t[0]):
            lo = [math.floor(n * done) for n in need]
            done += take
            part = tuple(math.floor(n * done) - lo_ for n, lo_ in zip(need, lo, strict=True))
            if any(part):
                parts.append((agent_id, (part[0], part[1], part[2], part[3])))
        return parts
