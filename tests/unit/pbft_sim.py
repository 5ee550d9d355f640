"""Deterministic, seeded network simulator for PBFT replicas (test support).

One :class:`Scenario` fixes everything random from its seed: the network
before the global stabilisation time (GST) loses, delays, reorders and
duplicates messages and splits the replicas into partitions that heal; from
GST on every message arrives within ``delta``. Up to ``f`` replicas are
Byzantine: they run the honest state machine internally (so they know what to
lie about) and the simulator rewrites what they send (see :data:`BEHAVIOURS`).

Signatures: by default an ideal signature scheme (keyed BLAKE2b whose keys
only the simulator holds, so a Byzantine replica can sign as itself but never
as anyone else) keeps a run in the millisecond range; ``ed25519=True`` uses real
Ed25519 keys through :func:`robeing.protocol.evidence.ed25519_check`.

:func:`run` returns a :class:`Result` with the safety and liveness verdicts
and counters; the tests assert on them.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import nacl.signing

from robeing.protocol.evidence import SignatureCheck, Signer, ed25519_check, ed25519_signer
from robeing.protocol.pbft import (
    GENESIS_DIGEST,
    NULL_DIGEST,
    Action,
    Broadcast,
    Checkpoint,
    Commit,
    Decide,
    EnterView,
    FetchState,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Replica,
    ReportEvidence,
    Request,
    Send,
    SetTimer,
    Status,
    ViewChange,
    chain_digest,
    decode_message,
    encode_message,
    request_digest,
    sign,
)

BEHAVIOURS = ("silent", "equivocate", "forge", "wrong_digest", "replay", "flood")
"""silent: sends nothing. equivocate: tells half the group one thing and the
other half another; equivocating replicas collude (each one prepares and
commits every digest a faulty primary proposed for a slot) and a faulty new
primary sends half the group a new-view whose pre-prepares drop the prepared
requests. forge: adds messages claiming to come from others. wrong_digest:
prepares, commits and checkpoints a random digest. replay: re-sends old
messages it received. flood: adds valid-looking junk (far sequence numbers,
high-view view changes, status spam)."""

KINDS: tuple[str, ...] = (
    "none",
    "silent_primary",
    "silent",
    "equivocate",
    "wrong_digest",
    "forge",
    "replay",
    "flood",
    "mixed",
    "byzantine_primary",
)
"""Fault kinds; ``random_scenario`` cycles through them by seed."""


@dataclass
class Scenario:
    """Everything one run depends on."""

    n: int
    f: int
    seed: int
    kind: str = "none"
    byzantine: dict[str, str] = field(default_factory=dict)
    clients: int = 2
    requests_per_client: int = 2
    gst: float = 20.0
    loss: float = 0.1
    duplication: float = 0.05
    max_delay: float = 4.0
    delta: float = 1.0
    partitions: list[tuple[float, float, frozenset[str]]] = field(default_factory=list)
    ed25519: bool = False
    wire: bool = False
    checkpoint_interval: int = 2
    log_size: int = 4
    timeout: float = 8.0
    max_timeout: float = 64.0
    status_interval: float = 4.0
    client_retry: float = 6.0
    liveness_bound: float = 150.0


def random_scenario(n: int, f: int, seed: int) -> Scenario:
    """Draw a scenario; the fault kind cycles with the seed so every kind is covered."""
    rng = random.Random(seed * 1_000_003 + n)
    ids = [f"r{i}" for i in range(n)]
    kind = KINDS[seed % len(KINDS)]
    byzantine: dict[str, str] = {}
    if kind == "silent_primary":
        byzantine["r0"] = "silent"
    elif kind == "byzantine_primary":
        byzantine["r0"] = rng.choice(("equivocate", "wrong_digest", "silent"))
    if kind != "none":
        count = rng.randint(max(1, len(byzantine)), f)
        others = [r for r in ids if r not in byzantine]
        for r in rng.sample(others, count - len(byzantine)):
            byzantine[r] = kind if kind in BEHAVIOURS else rng.choice(BEHAVIOURS)
    gst = rng.uniform(5.0, 35.0)
    partitions = []
    for _ in range(rng.choice((0, 0, 1, 2))):
        start = rng.uniform(0.0, gst)
        group = frozenset(rng.sample(ids, rng.randint(1, n - 1)))
        partitions.append((start, rng.uniform(start, gst), group))
    return Scenario(
        n=n,
        f=f,
        seed=seed,
        kind=kind,
        byzantine=byzantine,
        clients=rng.choice((1, 2, 3)),
        requests_per_client=rng.choice((1, 2)),
        gst=gst,
        loss=rng.choice((0.0, 0.05, 0.2, 0.4)),
        duplication=rng.choice((0.0, 0.1, 0.3)),
        max_delay=rng.uniform(0.5, 6.0),
        partitions=partitions,
        ed25519=seed % 97 == 5,
        wire=seed % 13 == 7,
    )


@dataclass
class Result:
    """Verdicts and counters of one run."""

    scenario: Scenario
    violations: list[str]
    live: bool
    finished_at: float
    decided: dict[str, dict[int, bytes]]
    max_view: int
    view_changes: int
    state_transfers: int
    evidence: int
    deliveries: int
    refused: Counter[str]

    @property
    def safe(self) -> bool:
        return not self.violations


class _Ideal:
    """Ideal signatures: MAC keys that only the simulator knows."""

    def __init__(self, rng: random.Random, agents: list[str]) -> None:
        self.keys = {a: rng.randbytes(16) for a in agents}
        self.cache: dict[tuple[str, bytes, bytes], bool] = {}

    def signer(self, agent: str) -> Signer:
        key = self.keys[agent]
        return lambda data: hashlib.blake2b(data, key=key, digest_size=16).digest()

    def check(self, agent: str, data: bytes, signature: bytes) -> bool:
        hit = self.cache.get((agent, data, signature))
        if hit is None:
            key = self.keys.get(agent)
            hit = key is not None and hmac.compare_digest(
                hashlib.blake2b(data, key=key, digest_size=16).digest(), signature
            )
            self.cache[(agent, data, signature)] = hit
        return hit


class Simulation:
    """Event-driven run of one scenario (use :func:`run`)."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.ids = [f"r{i}" for i in range(sc.n)]
        self.client_ids = [f"c{i}" for i in range(sc.clients)]
        agents = self.ids + self.client_ids
        self.signers: dict[str, Signer]
        if sc.ed25519:
            keys = {a: nacl.signing.SigningKey(self.rng.randbytes(32)) for a in agents}
            self.signers = {a: ed25519_signer(k) for a, k in keys.items()}
            self.check: SignatureCheck = ed25519_check(
                {a: bytes(k.verify_key) for a, k in keys.items()}, cache_size=1 << 16
            )
        else:
            ideal = _Ideal(self.rng, agents)
            self.signers = {a: ideal.signer(a) for a in agents}
            self.check = ideal.check
        self.replicas = {
            r: Replica(
                r,
                self.ids,
                sc.f,
                self.signers[r],
                self.check,
                checkpoint_interval=sc.checkpoint_interval,
                log_size=sc.log_size,
                view_change_timeout=sc.timeout,
                max_view_change_timeout=sc.max_timeout,
                status_interval=sc.status_interval,
            )
            for r in self.ids
        }
        self.correct = [r for r in self.ids if r not in sc.byzantine]
        self.queue: list[tuple[float, int, str, Any]] = []
        self.counter = 0
        self.now = 0.0
        self.scheduled_tick: dict[str, float] = {}
        self.log: dict[str, dict[int, tuple[bytes, Request | None]]] = {r: {} for r in self.ids}
        self.chains: dict[str, dict[int, bytes]] = {r: {0: GENESIS_DIGEST} for r in self.ids}
        self.chosen: dict[int, bytes] = {}
        self.submitted: dict[tuple[str, int], Request] = {}
        self.decided_by: dict[tuple[str, int], set[str]] = {}
        self.next_ts = dict.fromkeys(self.client_ids, 1)
        self.violations: list[str] = []
        self.view_changes = 0
        self.state_transfers = 0
        self.evidence: set[Any] = set()
        self.deliveries = 0
        self.received: dict[str, list[Message]] = {r: [] for r in sc.byzantine}
        self.collusion: dict[tuple[int, int], set[bytes]] = {}
        self.complete = 0  # requests decided by every correct replica

    # --- event plumbing ---------------------------------------------------------

    def push(self, at: float, kind: str, data: Any) -> None:
        self.counter += 1
        heapq.heappush(self.queue, (at, self.counter, kind, data))

    def send(self, src: str, dst: str, msg: Message) -> None:
        now, sc = self.now, self.sc
        if now < sc.gst:
            for start, end, group in sc.partitions:
                if start <= now < end and (src in group) != (dst in group):
                    return
            if self.rng.random() < sc.loss:
                return
            copies = 2 if self.rng.random() < sc.duplication else 1
            for _ in range(copies):
                self.push(now + self.rng.uniform(0.0, sc.max_delay), "deliver", (dst, msg))
        else:
            copies = 2 if self.rng.random() < sc.duplication / 4 else 1
            for _ in range(copies):
                self.push(now + self.rng.uniform(0.05, sc.delta), "deliver", (dst, msg))

    def perform(self, r: str, actions: list[Action]) -> None:
        behaviour = self.sc.byzantine.get(r)
        for a in actions:
            if isinstance(a, Send | Broadcast):
                targets = [a.to] if isinstance(a, Send) else [x for x in self.ids if x != r]
                if behaviour is None:
                    for dst in targets:
                        self.send(r, dst, a.msg)
                else:
                    self.misbehave(r, behaviour, a.msg, targets)
            elif isinstance(a, SetTimer):
                if self.scheduled_tick.get(r) != a.at:
                    self.scheduled_tick[r] = a.at
                    self.push(a.at, "tick", (r, a.at))
            elif isinstance(a, Decide):
                self.record(r, a)
            elif isinstance(a, FetchState):
                delay = self.rng.uniform(0.0, self.sc.max_delay if self.now < self.sc.gst else 1.0)
                self.push(self.now + delay, "state", (r, a.seq, a.state_digest))
            elif isinstance(a, ReportEvidence):
                if behaviour is None:
                    self.accuse(r, a)
            elif isinstance(a, EnterView) and behaviour is None:
                self.view_changes += 1

    # --- checks -------------------------------------------------------------------

    def record(self, r: str, d: Decide) -> None:
        if r in self.sc.byzantine:
            self.log[r][d.seq] = (d.digest, d.request)
            return
        log = self.log[r]
        if d.seq - 1 not in log and d.seq != 1:
            self.violations.append(f"{r} decided {d.seq} after a gap")
        if d.digest != request_digest(d.request):
            self.violations.append(f"{r} decided {d.seq} with a digest not of its request")
        self.learn(r, d.seq, d.digest, d.request)
        self.chains[r][d.seq] = chain_digest(self.chains[r][d.seq - 1], d.seq, d.digest)

    def learn(self, r: str, seq: int, digest: bytes, request: Request | None) -> None:
        self.log[r][seq] = (digest, request)
        first = self.chosen.setdefault(seq, digest)
        if first != digest:
            self.violations.append(f"agreement: {r} decided another request for {seq}")
        if request is None:
            return
        key = (request.client, request.timestamp)
        if self.submitted.get(key) != request:
            self.violations.append(f"validity: {r} decided a request no client submitted")
            return
        done = self.decided_by.setdefault(key, set())
        before = len(done)
        done.add(r)
        if before < len(done) == len(self.correct):
            self.complete += 1
        if before == self.sc.f and len(done) == self.sc.f + 1:  # the client has f + 1 replies
            client, ts = key
            if ts < self.sc.requests_per_client:
                self.push(self.now + self.rng.uniform(0.0, 2.0), "submit", client)

    def accuse(self, r: str, a: ReportEvidence) -> None:
        ev = a.evidence
        if ev.offender not in self.sc.byzantine:
            self.violations.append(f"{r} accused correct replica {ev.offender}")
        if not ev.verify(self.check):
            self.violations.append(f"{r} reported evidence that does not verify")
        self.evidence.add(ev.key)

    # --- clients ----------------------------------------------------------------

    def submit(self, client: str) -> None:
        ts = self.next_ts[client]
        self.next_ts[client] = ts + 1
        op = {"client": client, "n": ts, "blob": self.rng.randbytes(4)}
        req = sign(Request(client, op, ts), self.signers[client])
        self.submitted[(client, ts)] = req
        self.retry(client, ts)

    def retry(self, client: str, ts: int) -> None:
        if len(self.decided_by.get((client, ts), ())) > self.sc.f:
            return
        req = self.submitted[(client, ts)]
        for r in self.ids:
            self.send(client, r, req)
        self.push(self.now + self.sc.client_retry, "retry", (client, ts))

    # --- state transfer -------------------------------------------------------------

    def transfer(self, r: str, seq: int, digest: bytes) -> None:
        replica = self.replicas[r]
        if replica.awaiting_state != (seq, digest):
            return
        source = next(
            (s for s in self.correct if s != r and self.chains[s].get(seq) == digest), None
        )
        if source is None:
            self.push(self.now + 1.0, "state", (r, seq, digest))
            return
        self.state_transfers += 1
        timestamps: dict[str, int] = {}
        for s in range(1, seq + 1):
            d, request = self.log[source][s]
            if r in self.sc.byzantine:
                self.log[r][s] = (d, request)
            elif s in self.log[r]:
                if self.log[r][s][0] != d:
                    self.violations.append(f"agreement: state transfer to {r} conflicts at {s}")
            else:
                self.learn(r, s, d, request)
            if request is not None:
                timestamps[request.client] = max(
                    timestamps.get(request.client, 0), request.timestamp
                )
            self.chains[r][s] = self.chains[source][s]
        self.perform(r, replica.on_state_transferred(seq, digest, self.now, timestamps))

    # --- Byzantine behaviour ------------------------------------------------------

    def misbehave(self, r: str, behaviour: str, msg: Message, targets: list[str]) -> None:
        rng, sign_r = self.rng, self.signers[r]
        if behaviour == "silent":
            return
        if behaviour == "equivocate":
            self.equivocate(r, msg, targets)
            return
        if behaviour == "wrong_digest" and isinstance(
            msg, PrePrepare | Prepare | Commit | Checkpoint
        ):
            msg = self.variant(r, msg, null=False)
        for dst in targets:
            self.send(r, dst, msg)
        if behaviour == "forge" and isinstance(msg, Prepare | Commit):
            victim = rng.choice([x for x in self.ids if x != r])
            forged = sign(replace(msg, replica=victim, digest=rng.randbytes(32)), sign_r)
            fake = sign(Request(rng.choice(self.client_ids), "evil", 10**6), sign_r)
            for dst in targets:
                self.send(r, dst, forged)
                self.send(r, dst, fake)
        elif behaviour == "replay" and self.received[r]:
            for _ in range(3):
                self.send(r, rng.choice(self.ids), rng.choice(self.received[r]))
        elif behaviour == "flood":
            for _ in range(4):
                self.send(r, rng.choice(self.ids), self.junk(r))

    def equivocate(self, r: str, msg: Message, targets: list[str]) -> None:
        rng, sign_r = self.rng, self.signers[r]
        half = set(rng.sample(targets, len(targets) // 2))
        other: Message = msg
        if isinstance(msg, PrePrepare):
            other = self.variant(r, msg, null=True)
            assert isinstance(other, PrePrepare)
            self.collusion[(msg.view, msg.seq)] = {msg.digest, other.digest}
        elif isinstance(msg, Prepare | Commit):
            digests = self.collusion.get((msg.view, msg.seq), set()) - {msg.digest}
            for digest in digests:  # vote for every value a faulty primary proposed
                for dst in targets:
                    self.send(r, dst, sign(replace(msg, digest=digest), sign_r))
            if not digests:
                other = self.variant(r, msg, null=False)
        elif isinstance(msg, Checkpoint):
            other = self.variant(r, msg, null=False)
        elif isinstance(msg, NewView) and msg.pre_prepares:
            half = set(targets[1:])  # all but one: a quorum would follow a forged new view
            nulls = tuple(
                sign(replace(pp, digest=NULL_DIGEST, request=None), sign_r)
                for pp in msg.pre_prepares
            )
            other = sign(replace(msg, pre_prepares=nulls), sign_r)
        for dst in targets:
            self.send(r, dst, other if dst in half else msg)

    def variant(self, r: str, msg: Message, *, null: bool) -> Message:
        sign_r = self.signers[r]
        if isinstance(msg, PrePrepare):
            if null or msg.request is None:
                return sign(replace(msg, digest=NULL_DIGEST, request=None), sign_r)
            return sign(replace(msg, digest=self.rng.randbytes(32)), sign_r)
        if isinstance(msg, Checkpoint):
            return sign(replace(msg, state_digest=self.rng.randbytes(32)), sign_r)
        assert isinstance(msg, Prepare | Commit)
        return sign(replace(msg, digest=self.rng.randbytes(32)), sign_r)

    def junk(self, r: str) -> Message:
        rng, sign_r, view = self.rng, self.signers[r], self.replicas[r].view
        choice = rng.randrange(5)
        if choice == 0:
            return sign(Prepare(view, rng.randrange(200), rng.randbytes(32), r), sign_r)
        if choice == 1:
            return sign(
                Commit(rng.randrange(view + 3), rng.randrange(200), rng.randbytes(32), r), sign_r
            )
        if choice == 2:
            seq = self.sc.checkpoint_interval * rng.randrange(1, 60)
            return sign(Checkpoint(seq, rng.randbytes(32), r), sign_r)
        if choice == 3:
            return sign(
                ViewChange(view + rng.randrange(1, 50), 0, GENESIS_DIGEST, (), (), r), sign_r
            )
        return sign(Status(r, view, True, 0, 0), sign_r)

    # --- main loop ------------------------------------------------------------------

    def deliver(self, dst: str, msg: Message) -> None:
        self.deliveries += 1
        behaviour = self.sc.byzantine.get(dst)
        if behaviour == "silent":
            return
        if behaviour == "replay" and len(self.received[dst]) < 500:
            self.received[dst].append(msg)
        if self.sc.wire:
            msg = decode_message(encode_message(msg))
        self.perform(dst, self.replicas[dst].on_message(msg, self.now))

    def done(self) -> bool:
        return self.complete == self.sc.clients * self.sc.requests_per_client

    def run(self) -> Result:
        sc = self.sc
        for client in self.client_ids:
            self.push(self.rng.uniform(0.0, sc.gst), "submit", client)
        for r in self.ids:
            self.push(0.0, "tick", (r, 0.0))
            self.scheduled_tick[r] = 0.0
        horizon = sc.gst + sc.liveness_bound
        handlers: dict[str, Callable[..., None]] = {
            "deliver": self.deliver,
            "submit": self.submit,
            "retry": self.retry,
            "state": self.transfer,
            "tick": self.tick,
        }
        while self.queue and not self.done():
            at, _, kind, data = heapq.heappop(self.queue)
            if at > horizon:
                break
            self.now = at
            if isinstance(data, tuple):
                handlers[kind](*data)
            else:
                handlers[kind](data)
        refused: Counter[str] = Counter()
        for r in self.correct:
            refused.update(self.replicas[r].refused)
        return Result(
            scenario=sc,
            violations=self.violations,
            live=self.done(),
            finished_at=self.now,
            decided={r: {s: d for s, (d, _) in self.log[r].items()} for r in self.correct},
            max_view=max(self.replicas[r].view for r in self.correct),
            view_changes=self.view_changes,
            state_transfers=self.state_transfers,
            evidence=len(self.evidence),
            deliveries=self.deliveries,
            refused=refused,
        )

    def tick(self, r: str, at: float) -> None:
        if self.scheduled_tick.get(r) != at or self.sc.byzantine.get(r) == "silent":
            return
        self.perform(r, self.replicas[r].tick(self.now))


def run(scenario: Scenario) -> Result:
    """Run one scenario to completion or to ``gst + liveness_bound``."""
    return Simulation(scenario).run()
