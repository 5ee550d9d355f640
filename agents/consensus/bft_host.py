"""The host of one PBFT replica: carries its actions over the broker.

Each member of a group (:class:`~robeing.protocol.pbft.GroupSpec`) runs a
:class:`BftGroup`, which hosts the pure :class:`~robeing.protocol.pbft.Replica`
and carries out its actions:

==================  =================================================================
replica action      what the host does
==================  =================================================================
Send                P2P ``pbft.msg`` ``{"g": group, "m": wire bytes}`` to the member
Broadcast           one ``pbft.msg`` publish, routed to every member (``bft/<group>``)
SetTimer            wakes the group's ticker task, which calls ``Replica.tick``
Decide              executes into the decided log, replies to the client
FetchState          downloads the missing decided entries from a peer (``pbft.state``)
ReportEvidence      hands the equivocation to the agent (evidence log, guardians)
EnterView           logs and times the view change (``view_changes``)
==================  =================================================================

Invariants:
    * The replica is only called from the event loop and each call runs to
      completion, so handlers never interleave inside it.
    * Decisions are executed in the order the replica emits them (gap-free
      sequence numbers). A request whose timestamp is not newer than the last
      one executed for its client is logged but not executed again, and the
      cached reply is sent instead (PBFT's reply cache).
    * Outgoing messages leave in the order the replica produced them (one
      sender task per group, unconfirmed publishes): a lost message is repaired
      by the protocol's status retransmissions, never by the host.
    * State transfer installs entries only if they rebuild the quorum-certified
      state digest from the replica's own, so a lying peer cannot inject state.
    * Every buffer is bounded: the outgoing queue (:data:`OUTBOX_CAP`), the
      decided log (:data:`MAX_LOG`), the reply cache and the view-change history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...broker import topology as topo
from ...protocol.envelope import BROADCAST, Envelope
from ...protocol.errors import ConfigError, DecodeError, Reject
from ...protocol.evidence import Equivocation, EvidenceLog, SignatureCheck, ed25519_signer
from ...protocol.pbft import (
    Action,
    Broadcast,
    Decide,
    Decided,
    EnterView,
    FetchState,
    GroupSpec,
    Message,
    Replica,
    ReportEvidence,
    Request,
    Send,
    SetTimer,
    ViewChange,
    decode_message,
    encode_message,
    group_key,
    verify_transfer,
)
from ..context import AgentContext
from .bft_client import PRIORITY

if TYPE_CHECKING:
    from ...protocol.identity import Certificate

log = logging.getLogger(__name__)

OUTBOX_CAP = 10_000
MAX_LOG = 100_000
STATE_CHUNK = 256
STATE_BYTES = 256 * 1024
MAX_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class _Outgoing:
    exchange: str
    key: str  # routing key: an agent id, a group key, or a reply queue (default exchange)
    receiver: str  # the envelope's receiver ("*" for a group multicast)
    type: str
    payload: dict[str, Any]


PeerLookup = Callable[[str], "Certificate | None"]
Tamper = Callable[[str, Message], Iterable[Message | bytes]]
"""``tamper(peer, msg)`` → what actually goes to ``peer`` (fault injection only)."""


class BftGroup:
    """Hosts this agent's replica of one group and carries its actions over the broker.

    Args:
        agent: the hosting agent (must be a member).
        spec: the group.
        check: signature check knowing members' and clients' keys.
        evidence: log shared with the agent (equivocations land there).
        on_evidence: called with each new equivocation (to tell the guardians).
        peer: finds a certificate (to encrypt to a member or client).
        clock: monotonic clock driving the replica's timers.

    Raises:
        ConfigError: the agent is not a member.
    """

    def __init__(
        self,
        agent: AgentContext,
        spec: GroupSpec,
        check: SignatureCheck,
        evidence: EvidenceLog,
        on_evidence: Callable[[Equivocation], None],
        peer: PeerLookup,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if agent.id not in spec.members:
            raise ConfigError(f"{agent.id!r} is not a member of BFT group {spec.name!r}")
        if not agent.role.takes_work:
            raise ConfigError(f"a {agent.role.name} has no inbox and cannot host a replica")
        self.agent, self.spec = agent, spec
        self.replica = Replica(
            agent.id,
            spec.members,
            spec.f,
            ed25519_signer(agent.identity.signing_key),
            check,
            checkpoint_interval=spec.checkpoint_interval,
            view_change_timeout=spec.view_change_timeout,
            status_interval=spec.status_interval,
            evidence=evidence,
        )
        self.log: deque[Decided] = deque(maxlen=MAX_LOG)
        self.on_decide: list[Callable[[Decided], None]] = []
        self.tamper: Tamper | None = None
        self.refused: Counter[str] = Counter()
        self.view_changes: deque[dict[str, Any]] = deque(maxlen=32)
        self.sent = self.dropped = self.send_failures = 0
        self._clock, self._on_evidence, self._peer = clock, on_evidence, peer
        self._last_ts: dict[str, int] = {}
        self._replies: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
        self._out: asyncio.Queue[_Outgoing] = asyncio.Queue(OUTBOX_CAP)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._fetch: asyncio.Task[None] | None = None
        self._vc_started: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    async def start(self) -> None:
        """Start the sender and ticker tasks (idempotent).

        Raises:
            Nothing.
        """
        if not self._tasks:
            # Group broadcasts are one publish that the direct exchange copies to every
            # member's inbox: a publish costs a syscall, n - 1 of them per step did not scale.
            inbox = topo.agent_queue(self.agent.id)
            await self.agent.broker.bind(inbox, topo.DIRECT_EXCHANGE, group_key(self.name))
            self._tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._ticker())]
            self._perform(self.replica.tick(self._clock()))

    async def stop(self) -> None:
        """Cancel the group's tasks; unsent messages are dropped (peers retransmit).

        Raises:
            Nothing.
        """
        tasks = [*self._tasks, *([self._fetch] if self._fetch else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []

    # -- incoming ------------------------------------------------------------

    def receive(self, raw: Any, *, request: bool = False) -> None:
        """Feed one wire message (``pbft.msg``, or a client's ``pbft.request``).

        Raises:
            Reject: not a PBFT message (or not a request, with ``request``).
        """
        try:
            if not isinstance(raw, bytes):
                raise DecodeError("not bytes")
            msg = decode_message(raw)
        except DecodeError as exc:
            self.refused["malformed"] += 1
            raise Reject(f"malformed PBFT message: {exc}") from None
        if request:
            if not isinstance(msg, Request):
                self.refused["malformed"] += 1
                raise Reject("pbft.request must carry a client request")
            cached = self._replies.get(msg.client)
            if cached is not None and cached[0] == msg.timestamp:  # a retransmission
                self._reply(msg, cached[1])
        if isinstance(msg, ViewChange) and msg.new_view > self.replica.view:
            # A view change is timed from its first sign here: our timer or a peer's message.
            self._vc_started = self._vc_started or self._clock()
        self._perform(self.replica.on_message(msg, self._clock()))

    def state_entries(self, after: int, upto: int) -> list[Any]:
        """Decided entries from ``after + 1`` on (at most ``upto``) for a lagging peer.

        A reply holds at most :data:`STATE_CHUNK` entries and about
        :data:`STATE_BYTES` of requests (always at least one entry), so it
        stays far below the envelope size limit; the peer asks again for more.

        Raises:
            Nothing: entries no longer (or not yet) held are left out.
        """
        if not self.log or after + 1 < self.log[0].seq:
            return []
        first, size = self.log[0].seq, 0
        out: list[Any] = []
        for seq in range(after + 1, min(upto, after + STATE_CHUNK, self.log[-1].seq) + 1):
            d = self.log[seq - first]
            wire = None if d.request is None else encode_message(d.request)
            size += len(wire or b"")
            if out and size > STATE_BYTES:
                break
            out.append([d.seq, d.view, d.digest, wire])
        return out

    def report(self, entries: int = 20) -> dict[str, Any]:
        """State for ``robeing bft log``, heartbeats and tests.

        Raises:
            Nothing.
        """
        r = self.replica
        return {
            "group": self.name,
            "members": list(self.spec.members),
            "f": self.spec.f,
            "view": r.view,
            "primary": r.primary,
            "active": r.active,
            "last_executed": r.last_executed,
            "state_digest": r.state_digest.hex(),
            "log": [d.to_data() for d in list(self.log)[-entries:]] if entries else [],
            "refused": dict(self.refused + r.refused),
            "duplicates": r.duplicates,
            "view_changes": list(self.view_changes),
            "sent": self.sent,
            "dropped": self.dropped,
        }

    # -- replica actions -----------------------------------------------------------

    def _perform(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self._send(a.to, a.msg)
            elif isinstance(a, Broadcast):
                if isinstance(a.msg, ViewChange) and self._vc_started is None:
                    self._vc_started = self._clock()
                if self.tamper is None:
                    payload = {"g": self.name, "m": encode_message(a.msg)}
                    self._enqueue(topo.DIRECT_EXCHANGE, group_key(self.name), BROADCAST, payload)
                    continue
                for peer in self.spec.members:
                    if peer != self.agent.id:
                        self._send(peer, a.msg)
            elif isinstance(a, SetTimer):
                self._wake.set()
            elif isinstance(a, Decide):
                self._execute(a)
            elif isinstance(a, FetchState):
                if self._fetch is None or self._fetch.done():
                    self._fetch = asyncio.create_task(self._fetch_state())
            elif isinstance(a, ReportEvidence):
                self._on_evidence(a.evidence)
            elif isinstance(a, EnterView):
                took = None if self._vc_started is None else self._clock() - self._vc_started
                self._vc_started = None
                self.view_changes.append({"view": a.view, "primary": a.primary, "seconds": took})
                log.info(
                    "%s: group %s entered view %d (primary %s)",
                    self.agent.id,
                    self.name,
                    a.view,
                    a.primary,
                )

    def _send(self, peer: str, msg: Message) -> None:
        items: Iterable[Message | bytes] = (msg,) if self.tamper is None else self.tamper(peer, msg)
        for item in items:
            data = item if isinstance(item, bytes) else encode_message(item)
            self._enqueue(topo.DIRECT_EXCHANGE, peer, peer, {"g": self.name, "m": data})

    def _enqueue(
        self,
        exchange: str,
        key: str,
        receiver: str,
        payload: dict[str, Any],
        mtype: str = "pbft.msg",
    ) -> None:
        try:
            self._out.put_nowait(_Outgoing(exchange, key, receiver, mtype, payload))
        except asyncio.QueueFull:
            self.dropped += 1

    def _execute(self, d: Decide, reply: bool = True) -> None:
        req = d.request
        if req is None:
            self._append(Decided(d.seq, d.view, d.digest, None, None, None, False))
            return
        if req.timestamp <= self._last_ts.get(req.client, -1):
            self._append(
                Decided(d.seq, d.view, d.digest, req.client, req.timestamp, None, False, req)
            )
            return
        self._last_ts[req.client] = req.timestamp
        op = req.op
        ok = isinstance(op, dict) and op.get("g") == self.name
        value = op.get("v") if ok else None
        entry = Decided(d.seq, d.view, d.digest, req.client, req.timestamp, value, ok, req)
        self._append(entry)
        payload = {
            "g": self.name,
            "client": req.client,
            "ts": req.timestamp,
            "seq": d.seq,
            "digest": d.digest,
            "result": {"value": value, "ok": ok},
            "view": self.replica.view,  # lets the client address the primary next time
        }
        self._replies[req.client] = (req.timestamp, payload)
        self._replies.move_to_end(req.client)
        while len(self._replies) > MAX_CLIENTS:
            self._replies.popitem(last=False)
        if reply:
            self._reply(req, payload)
        for hook in self.on_decide:
            try:
                hook(entry)
            except Exception:
                log.exception("on_decide hook failed for %s #%d", self.name, d.seq)

    def _append(self, entry: Decided) -> None:
        if self.log and entry.seq != self.log[-1].seq + 1:
            log.error(
                "%s: decided log of %s jumps from %d to %d",
                self.agent.id,
                self.name,
                self.log[-1].seq,
                entry.seq,
            )
        self.log.append(entry)

    def _reply(self, req: Request, payload: dict[str, Any]) -> None:
        reply_to = req.op.get("r") if isinstance(req.op, dict) else None
        if isinstance(reply_to, str) and reply_to.startswith(f"robeing.reply.{req.client}."):
            self._enqueue(topo.REPLY_EXCHANGE, reply_to, req.client, payload, "pbft.reply")

    # -- tasks ---------------------------------------------------------------------

    async def _sender(self) -> None:
        agent = self.agent
        while True:
            out = await self._out.get()
            receiver, mtype = out.receiver, out.type
            try:
                if receiver != BROADCAST and self._peer(receiver) is None:
                    raise ConfigError(f"no certificate for {receiver!r}")
                env = Envelope(mtype, out.payload, receiver=receiver, priority=PRIORITY)
                body = agent.seal(env)  # encrypted unless multicast
                await agent.broker.publish(
                    out.exchange, out.key, body, priority=PRIORITY, persistent=False,
                    confirm=False, mandatory=False,
                )  # fmt: skip
                self.sent += 1
            except Exception as exc:  # the protocol retransmits; keep the group running
                self.send_failures += 1
                level = logging.WARNING if self.send_failures in (1, 10, 100) else logging.DEBUG
                log.log(
                    level, "group %s: could not send %s to %s: %s", self.name, mtype, receiver, exc
                )

    async def _ticker(self) -> None:
        while True:
            at, now = self.replica.next_deadline, self._clock()
            if at is not None and now >= at:
                self._perform(self.replica.tick(now))
                if (self.replica.next_deadline or now + 1) <= now:
                    await asyncio.sleep(0.01)  # never spin on a deadline that did not move
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0 if at is None else at - now)

    async def _fetch_state(self) -> None:
        peers = [m for m in self.spec.members if m != self.agent.id]
        while (target := self.replica.awaiting_state) is not None:
            seq, digest = target
            for peer in peers:
                start, chain = self.replica.last_executed, self.replica.state_digest
                entries = await self._download(peer, start, seq)
                decided = (
                    None if entries is None else verify_transfer(chain, start, entries, seq, digest)
                )
                if decided is None:
                    self.refused["state_transfer"] += 1
                    continue
                if self.replica.awaiting_state != target:
                    break
                for d in decided:
                    self._execute(d, reply=False)
                log.info(
                    "%s: group %s installed state %d from %s", self.agent.id, self.name, seq, peer
                )
                self._perform(
                    self.replica.on_state_transferred(
                        seq, digest, self._clock(), dict(self._last_ts)
                    )
                )
                break
            else:
                await asyncio.sleep(1.0)

    async def _download(self, peer: str, start: int, seq: int) -> list[Any] | None:
        entries: list[Any] = []
        while start + len(entries) < seq:
            try:
                got = await self.agent.request(
                    peer,
                    "pbft.state",
                    {"g": self.name, "after": start + len(entries), "upto": seq},
                    timeout=5.0,
                )
            except Exception as exc:
                log.debug("state from %s failed: %s", peer, exc)
                return None
            if not isinstance(got, list) or not got:
                return None
            entries.extend(got)
        return entries
