"""Failing over between the nodes of a RabbitMQ cluster.

aio-pika's robust connection reconnects to one URL only (its ``url``), and
restores channels, queues, bindings and consumers once it is back. So
robeing keeps one robust connection and, when its node is lost, points that
connection's ``url`` at another node that answers: aio-pika's next attempt
lands there and restores everything. Nothing above this module sees which
node it is on.

Invariants:
    * the node list is fixed at start, in this process's own order
      (:func:`.addresses.failover_order`);
    * at most one failover runs at a time, and none after :meth:`Nodes.close`;
    * a probe opens a connection under :data:`PROBE_NAME`, which names no
      agent, so a coordinator's connection watcher never takes the probe's
      close for the agent's;
    * the lost node is probed last: it may come back (a restart), and with a
      single reachable node the fleet must still reconnect to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.exceptions
from yarl import URL

from .addresses import failover_order, safe

log = logging.getLogger(__name__)

PROBE_NAME = "robeing-failover-probe"
PROBE_TIMEOUT = 3.0
# AMQP heartbeat on a cluster (seconds, unless the URL sets ``heartbeat=``).
# A paused or cut-off node keeps its TCP connections open; with RabbitMQ's
# 60 s a process would stay on it that long. aiormq gives up on a silent
# connection after about three heartbeats, so a process leaves such a node
# in ~12 s and fails over, and its exclusive queues (the coordinator's lock)
# are not held by a connection that can no longer act.
CLUSTER_HEARTBEAT_S = 3

Connect = Callable[[str], Awaitable[aio_pika.abc.AbstractRobustConnection]]
T = TypeVar("T")

# Refusals every node would repeat (the cluster shares users and vhosts).
FINAL = (aiormq.exceptions.ProbableAuthenticationError, aiormq.exceptions.InvalidFrameError)


class Nodes:
    """The broker addresses of one process and the node it is on.

    Args:
        urls: the validated addresses (:func:`.addresses.amqp_urls`).
        seed: seeds this process's order of them.
    """

    def __init__(self, urls: Sequence[str], seed: str | int) -> None:
        if len(urls) > 1:
            urls = [_with_heartbeat(u) for u in urls]
        self.addresses = failover_order(urls, seed)
        self.address = self.addresses[0]
        self.failovers = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None

    def _from(self, url: str, skip: bool = False) -> list[str]:
        """Every address, starting at ``url`` (after it, and it last, with ``skip``)."""
        i = self.addresses.index(url) + (1 if skip else 0)
        return self.addresses[i:] + self.addresses[:i]

    async def connect(self, connect: Connect) -> aio_pika.abc.AbstractRobustConnection:
        """``connect(url)`` to the first address, in our order, that accepts us.

        Raises:
            The last connection error when no node accepts; a refused login
            or vhost at once (every node would refuse it).
        """
        last: BaseException | None = None
        for url in self._from(self.address):
            try:
                conn = await connect(url)
            except FINAL:
                self.address = url
                raise
            except Exception as exc:
                last = exc
                if len(self.addresses) > 1:
                    log.warning("broker node %s unreachable: %s", safe(url), exc)
                continue
            self.address = url
            return conn
        assert last is not None
        raise last

    def watch(self, conn: aio_pika.abc.AbstractRobustConnection) -> None:
        """Fail ``conn`` over to another node whenever it loses its own."""
        self._conn = conn
        if len(self.addresses) > 1:
            conn.close_callbacks.add(self._on_lost)

    def _on_lost(self, *_: Any) -> None:
        if self._closing or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._fail_over())

    async def _fail_over(self) -> None:
        """Point the robust connection at a node that answers, until it is back."""
        conn = self._conn
        if conn is None:
            return
        lost = self.address
        while not self._closing and not conn.is_closed and not conn.connected.is_set():
            for url in self._from(self.address, skip=True):
                if conn.connected.is_set() or self._closing:
                    return
                if await reachable(url):
                    if url != self.address:
                        log.warning(
                            "broker node %s lost: failing over to %s", safe(lost), safe(url)
                        )
                        self.address = url
                        self.failovers += 1
                        if isinstance(conn, aio_pika.RobustConnection):
                            conn.url = URL(url)
                    break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(conn.connected.wait(), PROBE_TIMEOUT)

    async def close(self) -> None:
        """Stop failing over (before the connection is closed on purpose)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the broker at ``url`` completes an AMQP handshake within ``timeout``.

    A TCP connect is not enough: a paused (SIGSTOPped) node's kernel still
    accepts connections.
    """
    try:
        probe = await asyncio.wait_for(
            aiormq.connect(url, client_properties={"connection_name": PROBE_NAME}), timeout
        )
    except Exception:
        return False
    with contextlib.suppress(Exception):
        await probe.close()
    return True


def _with_heartbeat(url: str) -> str:
    parsed = URL(url)
    if "heartbeat" in parsed.query:
        return url
    return str(parsed.update_query(heartbeat=CLUSTER_HEARTBEAT_S))


async def confirmed(publish: Awaitable[T]) -> T:
    """``publish``; a confirm cancelled by a dying connection raises ``ConnectionError``.

    aiormq cancels the pending confirms of a connection whose reader died (a
    node lost). That ``CancelledError`` is not a cancellation of our task and
    must not escape as one (callers would stop as if asked to); as a lost
    connection it is retried like one.
    """
    try:
        return await publish
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise ConnectionError("connection lost while waiting for the broker's confirm") from None


def robust(connection_name: str) -> Connect:
    """How robeing opens its robust connection to one node, named for the management UI."""
    return lambda url: aio_pika.connect_robust(
        url,
        client_properties={"connection_name": connection_name},
        timeout=10,
        reconnect_interval=1.0,
        fail_fast="true",
    )


class Bindings:
    """Bindings made by hand (``bind()``), made again on the node we fail over to.

    aio-pika restores the bindings of the queues it declared, not those made
    on a temporary channel; after a failover our non-durable queues are new
    and lost them. The broker keeps a binding once, so rebinding a queue
    that survived is harmless.
    """

    def __init__(self) -> None:
        self._made: dict[tuple[str, str, str], None] = {}  # in the order made
        self._seen = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def remember(self, queue: str, exchange: str, routing_key: str) -> None:
        self._made[(queue, exchange, routing_key)] = None

    def after_reconnect(
        self, failovers: int, bind: Callable[[str, str, str], Awaitable[None]]
    ) -> None:
        """After a reconnect: when it was a failover, ``bind`` everything again (in a task)."""
        if failovers == self._seen:
            return
        self._seen = failovers
        task = asyncio.get_running_loop().create_task(self._rebind(bind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rebind(self, bind: Callable[[str, str, str], Awaitable[None]]) -> None:
        for queue, exchange, key in list(self._made):
            try:
                await bind(queue, exchange, key)
            except Exception as exc:
                log.error("could not bind %s to %s/%s again: %s", queue, exchange, key, exc)
