"""A lock the broker's Raft majority arbitrates: the lead of a coordinator (or a cluster leader).

:meth:`~robeing.broker.amqp.AmqpTransport.try_exclusive` is the one call
every lock user makes; this module is what it does.

Why not an exclusive queue. An exclusive classic queue is a mutex the broker
releases when its owner's connection closes, but it lives on one node: the
node of its owner's connection. When that node is cut off from its peers (a
partition, or a node paused past ``net_ticktime``) the majority drops the
queue while the owner, on the cut-off node, still holds it; a contender on
the majority side declares it afresh, and two processes hold the lock.

What this lock is. The lock is a quorum queue with a single active consumer
(``x-single-active-consumer``); every contender consumes it. Which consumer
is active is part of the queue's replicated state, so the Raft majority
decides it: when the active consumer's channel or connection closes, or its
node is declared down (``noconnection``, net_ticktime after it went silent),
the majority activates the next waiting consumer. A contender learns that it
is the active one by publishing a *ping* (a token only it knows, confirmed:
committed by the majority) and receiving it back: a single-active-consumer
queue delivers to the active consumer only.

RabbitMQ 3.10 does not tell an AMQP 0-9-1 consumer that it was deactivated,
and a consumer on a cut-off node cannot hear it anyway. So the holder keeps a
*lease*: it pings every :data:`RENEW_S` and must receive a ping of its own
within :data:`LEASE_S`; if it does not, it gives the lock up by dropping its
connection. That is how ownership ended for the exclusive queue too (the
connection closed), so every lock user's reaction stays the same: a
coordinator that loses its connection stops and competes again.

Invariants:
    * The majority has at most one active consumer at a time, and a ping
      reaches only the active consumer: a process that receives its own ping
      was the active consumer when the majority delivered it.
    * A holder cut off from the majority stops holding within ``LEASE_S``
      (plus a renewal period) of its last ping that came back; the majority
      activates another consumer only after it declared the holder's node
      down (``net_ticktime``, 10 s on the local cluster, 60 s by default) or
      saw its connection close. ``LEASE_S`` is well below ``net_ticktime``,
      so the two holdings do not overlap in time. This is timing, as with
      every lease; what makes a late holder harmless is the epoch fence
      (:mod:`robeing.agents.roles.coordinator.leadership`).
    * A lock is never restored after a reconnect: the lease ends with the
      channel it was taken on, and the holder must try again (and may lose).
    * On one node the same queue and protocol work unchanged (a quorum queue
      of one member); a holder's crash hands the lock over as soon as the
      broker sees the connection close, as with the exclusive queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable

import aio_pika.abc
import aiormq.abc
import aiormq.exceptions

from ..protocol.errors import BrokerError
from .base import QueueMismatch
from .consuming import RETRYABLE
from .failover import confirmed
from .topology import lease_spec

log = logging.getLogger(__name__)

RENEW_S = 0.5  # how often the holder pings
LEASE_S = 5.0  # the holder gives up when no ping of its own came back for this long
ACQUIRE_WAIT_S = 0.5  # how long a contender waits for its ping before saying "not ours"
OPEN_TIMEOUT_S = 2.0  # declaring the queue and joining the line (blocks while it has no leader)
CLOSE_TIMEOUT_S = 2.0  # a cut-off node may never answer our Connection.Close


class Lease:
    """One contender's consumer on a lock queue; held while our pings come back to us.

    Args:
        conn: the robust connection to contend on (the lease ends with its
            current transport).
        name: the lock queue.
        on_lost: called once when a held lease ends: it expired without a
            ping of ours coming back, or its channel closed (the connection
            died). Told at once, not at the reconnect: a holder must stop
            acting before anything it still had to send can go out on a new
            connection.
        drop: called after ``on_lost`` when the lease expired: drops the
            connection, which is what ends holding the lock for the broker.
    """

    def __init__(
        self,
        conn: aio_pika.abc.AbstractRobustConnection,
        name: str,
        on_lost: Callable[[], None],
        drop: Callable[[], None] = lambda: None,
    ) -> None:
        self.conn = conn
        self.name = name
        self.on_lost = on_lost
        self.drop = drop
        self.held = False
        self.closed = False
        self._token = secrets.token_hex(12)
        self._seq = 0
        self._last_own = 0.0  # monotonic time our last ping came back
        self._arrived = asyncio.Event()
        self._trying = False  # inside try_acquire: a foreign ping may precede ours
        self._wrapper: aio_pika.abc.AbstractChannel | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._pings: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Declare the lock queue and join the line of its consumers.

        Raises:
            aiormq.exceptions.AMQPError: the broker refused (see :meth:`try_acquire`).
        """
        spec = lease_spec(self.name)
        # A channel of our own, used through aiormq directly: nothing on it is
        # restored after a reconnect (a lock must be won again, never silently
        # resumed); the lease ends with this underlying channel.
        self._wrapper = await self.conn.channel(publisher_confirms=True)
        channel = await self._wrapper.get_underlay_channel()
        self._channel = channel
        channel.closing.add_done_callback(lambda _: self._ended())
        await channel.queue_declare(spec.name, durable=True, arguments=spec.arguments)
        await channel.basic_consume(spec.name, self._on_message, no_ack=True)

    async def _on_message(self, msg: aiormq.abc.DeliveredMessage) -> None:
        # Foreign pings (other contenders', stale ones) only tell us we are
        # active now; our own also tell us when the majority delivered it.
        if msg.body.decode(errors="replace").split(":", 1)[0] == self._token:
            self._last_own = time.monotonic()
            self._arrived.set()
        elif not self.held and not self._trying and not self.closed:
            # The majority made us the active consumer while we are not trying:
            # a contender that tried once and waits in line (a cluster member
            # nudged earlier, an observer). Staying would swallow every other
            # contender's pings and keep the lock unheld for ever: leave the
            # line; our next try joins it again, at its end.
            log.debug("lock %s: active while not trying; leaving the line", self.name)
            task = asyncio.get_running_loop().create_task(self.close())
            _TASKS.add(task)  # not in _pings: closing cancels those
            task.add_done_callback(_TASKS.discard)

    def _ping(self) -> None:
        """Publish a ping of ours, in a task of its own.

        Its confirm is awaited by nobody: a ping that comes back was committed
        by the majority, and one held up (a frozen node, a leader election)
        must hold up neither the holder's checks nor a contender's next try.
        """
        task = asyncio.get_running_loop().create_task(self._publish_ping())
        self._pings.add(task)
        task.add_done_callback(self._pings.discard)

    async def _publish_ping(self) -> None:
        channel = self._channel
        if channel is None or channel.is_closed:
            return
        self._seq += 1
        body = f"{self._token}:{self._seq}".encode()
        try:
            await asyncio.wait_for(
                confirmed(channel.basic_publish(body, routing_key=self.name, mandatory=True)),
                LEASE_S,
            )
        except Exception as exc:
            log.debug("lock %s: ping not confirmed: %s", self.name, exc)

    async def try_acquire(self, wait: float = ACQUIRE_WAIT_S) -> bool:
        """Ping and wait up to ``wait`` s for a ping of ours; True once we are the active consumer.

        Raises:
            ConnectionError: our channel is closed (the connection is gone).
        """
        if self.held:
            return True
        if self.closed:
            raise ConnectionError(f"the channel of {self.name} is closed")
        started = time.monotonic()
        self._arrived.clear()
        self._trying = True
        try:
            self._ping()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait)
        finally:
            self._trying = False
        if self._last_own < started or self.closed:
            return False
        self.held = True
        self._renewal = asyncio.get_running_loop().create_task(self._renew())
        return True

    async def _renew(self) -> None:
        """Ping every RENEW_S; give the lock up once none of ours came back for LEASE_S."""
        while not self.closed:
            await asyncio.sleep(RENEW_S)
            if time.monotonic() - self._last_own > LEASE_S:
                log.error(
                    "lock %s: no ping of ours came back for %.1fs; another process may hold "
                    "it now (our node cut off from the majority?): giving it up",
                    self.name,
                    time.monotonic() - self._last_own,
                )
                self.held = False
                self.on_lost()
                self.drop()
                await self.close()
                return
            self._ping()

    def _ended(self) -> None:
        self.closed = True
        if self.held:  # the channel closed under us: the connection is gone
            self.held = False
            log.warning("lock %s: lost with our connection", self.name)
            self.on_lost()
        if self._renewal is not None and self._renewal is not asyncio.current_task():
            self._renewal.cancel()
        for ping in self._pings:
            ping.cancel()

    async def close(self) -> None:
        """Leave the line (and give the lock up, if held): our channel closes."""
        self.held = False  # given up, not lost: on_lost is not called
        self._ended()
        if self._wrapper is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._wrapper.close(), CLOSE_TIMEOUT_S)


async def contend(
    leases: dict[str, Lease],
    conn: aio_pika.abc.AbstractRobustConnection | None,
    name: str,
    on_lost: Callable[[], None],
) -> bool:
    """Try to hold the lock ``name`` on ``conn``, keeping our place in line in ``leases``.

    A contender stays in line (a waiting consumer) between calls. Holding ends
    with the connection, as for an exclusive queue: the holder sees a
    reconnect and must try again.

    A held lease that ends calls ``on_lost()`` at once; one that can no
    longer be proven also drops ``conn``'s current transport
    (:func:`drop_connection`). False while the connection is down.

    Raises:
        BrokerError: the broker refuses the lock queue for good (another
            queue of that name and kind, or no permission).
    """
    lease = leases.get(name)
    if lease is not None and lease.closed:
        await lease.close()  # its robust channel, reopened on the new connection
        lease = None
    try:
        if conn is None:
            raise ConnectionError("not connected")
        if lease is None:
            lease = Lease(conn, name, on_lost, lambda: _spawn_drop(conn))
            leases[name] = lease
            # A frozen node never answers: the next try may find another.
            await asyncio.wait_for(lease.open(), OPEN_TIMEOUT_S)
        return await lease.try_acquire()
    except aiormq.exceptions.ChannelLockedResource as exc:
        # An exclusive queue of that name: the lock of an older robeing,
        # gone when its owner's connection closes.
        log.warning("lock %s is an exclusive queue held by another process: %s", name, exc)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise QueueMismatch(
            f"the lock queue {name!r} exists with other arguments (an older robeing's "
            f"lock?): {exc}; delete it (rabbitmqctl delete_queue {name})"
        ) from exc
    except aiormq.exceptions.ChannelAccessRefused as exc:
        raise BrokerError(f"this user may not hold the lock {name!r}: {exc}") from exc
    except (*RETRYABLE, aiormq.exceptions.AMQPError, OSError, TimeoutError, RuntimeError) as exc:
        # The connection is down or going (aio-pika: "Connection was not opened").
        log.debug("lock %s: not tried, the connection is down: %s", name, exc)
    if lease is not None:
        await lease.close()
    return False


async def release(leases: dict[str, Lease]) -> None:
    """Give up every lease (before closing the connection on purpose)."""
    for lease in list(leases.values()):
        await lease.close()
    leases.clear()


async def drop_connection(conn: aio_pika.abc.AbstractRobustConnection) -> None:
    """Close ``conn``'s current transport: aio-pika reconnects (to another node if
    this one is cut off), and the lock's users see the reconnect as the end of
    their hold."""
    transport = conn.transport
    if transport is None:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            transport.connection.close(ConnectionError("lock lost")), CLOSE_TIMEOUT_S
        )


_TASKS: set[asyncio.Task[None]] = set()  # running drops and closes (kept from the GC)


def _spawn_drop(conn: aio_pika.abc.AbstractRobustConnection) -> None:
    task = asyncio.get_running_loop().create_task(drop_connection(conn))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
