"""Decision time of agent selection at 10 to 10,000 registered agents.

Run: ``python tests/bench/bench_scheduling.py [--decisions N] [--seed S]``

For each fleet size the same sequence of task requirements is decided twice
in the same run: by :meth:`AgentRegistry.select` (skill index, load levels,
early stop, ``O(k log n)`` ranking) and by a naive baseline that scores every
registered agent and fully sorts them. Both use the same learned-performance
tracker and must pick the same agents (checked). Reported: p50 and p99 of
one decision, and the baseline/indexed ratio of each.

Fleet: 32 specializations, each agent offers 1-3 of them, capacity 4-16,
current load uniform below capacity with 10% of agents full. Tasks: 80% need
one or two skills, 20% need none; each asks for 1 or 3 agents.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from robeing.protocol.performance import PerformanceTracker
from robeing.protocol.scheduling import AgentInfo, AgentRegistry, Requirements, score

SIZES = (10, 100, 1000, 10_000)
SKILLS = [f"skill{i:02}" for i in range(32)]


def build_fleet(size: int, rng: random.Random) -> tuple[AgentRegistry, PerformanceTracker]:
    tracker = PerformanceTracker()
    registry = AgentRegistry(tracker)
    for i in range(size):
        capacity = rng.randint(4, 16)
        load = capacity if rng.random() < 0.1 else rng.randrange(capacity)
        agent_id = f"agent-{i:05}"
        registry.upsert(
            AgentInfo(
                id=agent_id,
                role=rng.choice(("worker", "specialist")),
                specializations=frozenset(rng.sample(SKILLS, rng.randint(1, 3))),
                load=load,
                capacity=capacity,
            )
        )
        for t in range(rng.randint(0, 5)):
            tracker.record(
                agent_id,
                now=float(t),
                success=rng.random() < 0.9,
                latency=rng.expovariate(1.0),
                deadline_met=rng.random() < 0.95,
            )
    return registry, tracker


def workload(count: int, rng: random.Random) -> list[tuple[Requirements, int]]:
    tasks = []
    for _ in range(count):
        skills = frozenset(rng.sample(SKILLS, rng.randint(1, 2))) if rng.random() < 0.8 else None
        tasks.append((Requirements(skills=skills or frozenset()), rng.choice((1, 3))))
    return tasks


def naive_select(
    agents: Sequence[AgentInfo], tracker: PerformanceTracker, req: Requirements, n: int, now: float
) -> list[AgentInfo]:
    """Baseline: look at every agent, score the eligible ones, sort them all."""
    eligible = [
        (-score(a, req, tracker.score(a.id, now)), a.id, a)
        for a in agents
        if a.load < a.capacity and (not req.skills or a.specializations & req.skills)
    ]
    eligible.sort()
    return [a for _, _, a in eligible[:n]]


Decide = Callable[[Requirements, int], list[AgentInfo]]


def timed(decide: Decide, tasks: list[tuple[Requirements, int]]) -> tuple[list[float], list[Any]]:
    """Microseconds per decision, and the ids picked by each."""
    times, picks = [], []
    for req, n in tasks:
        start = time.perf_counter_ns()
        chosen = decide(req, n)
        times.append((time.perf_counter_ns() - start) / 1000.0)
        picks.append([a.id for a in chosen])
    return times, picks


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def bench(size: int, decisions: int, seed: int, now: float = 10.0) -> tuple[float, ...]:
    """p50 and p99 of the indexed and of the naive decision at one fleet size."""
    rng = random.Random(seed * 100_003 + size)
    registry, tracker = build_fleet(size, rng)
    agents = list(registry)
    tasks = workload(decisions, rng)

    def indexed(req: Requirements, n: int) -> list[AgentInfo]:
        return registry.select(req, n, now=now)

    def naive(req: Requirements, n: int) -> list[AgentInfo]:
        return naive_select(agents, tracker, req, n, now)

    for decide in (indexed, naive):
        timed(decide, tasks[:50])  # warm-up
    fast, fast_picks = timed(indexed, tasks)
    slow, slow_picks = timed(naive, tasks)
    if fast_picks != slow_picks:
        raise SystemExit(f"selection differs from the baseline at {size} agents")
    return percentile(fast, 50), percentile(fast, 99), percentile(slow, 50), percentile(slow, 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000, help="decisions per fleet size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print("decision time in microseconds; ratio = naive / indexed")
    print(
        f"{'agents':>7} | {'indexed p50':>11} {'p99':>8} | {'naive p50':>10} {'p99':>8} | ", end=""
    )
    print(f"{'ratio p50':>9} {'p99':>7}")
    for size in SIZES:
        # The naive baseline is slow at 10,000 agents; fewer decisions keep the run short.
        decisions = args.decisions if size < 10_000 else max(200, args.decisions // 4)
        f50, f99, s50, s99 = bench(size, decisions, args.seed)
        print(f"{size:>7} | {f50:>11.1f} {f99:>8.1f} | {s50:>10.1f} {s99:>8.1f} | ", end="")
        print(f"{s50 / f50:>8.1f}x {s99 / f99:>6.1f}x")


if __name__ == "__main__":
    main()
