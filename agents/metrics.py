"""Prometheus metrics of one agent, served at ``http://<host>:<--metrics-port>/metrics``.

The same server answers ``GET /healthz`` for orchestrators' readiness and
startup probes: 200 ``alive`` while the agent has started and is connected to
the broker, else 503 with its state (``starting``, ``disconnected``,
``stopping``). It says nothing of heartbeats reaching anyone: ``robeing agent
--check`` is the end-to-end probe.

Nothing here sits on the message path: the runtime keeps plain counters
(:mod:`.stats`, the outbox's sent counts, the executor's task outcomes) and
one middleware times handlers; a scrape reads them on the agent's event loop
(a small asyncio HTTP server, so no thread races the loop) and turns them
into Prometheus series. A coordinator's series come from its state's report,
the same one its heartbeats carry.

Series (``robeing_`` prefix; labels in braces):

=====================================  =========  ===========================================
series                                 kind       what
=====================================  =========  ===========================================
``agent_info{id,role,cluster}``        gauge      1, naming the agent
``messages_received_total{type}``      counter    accepted messages (the checks passed)
``messages_sent_total{type}``          counter    messages published
``messages_failed_total``              counter    handler failures (dead-lettered)
``rejections_total{reason}``           counter    refused messages, by reason
``duplicates_total``                   counter    broker redeliveries dropped
``broadcasts_ignored_total``           counter    broadcasts of types nobody here handles
``handler_seconds{type}``              histogram  handler latency
``tasks_total{type,outcome}``          counter    attempts run: succeeded, failed or retry
``task_seconds{type}``                 histogram  attempt durations
``tasks_cancelled_total``              counter    attempts stopped by a cancel
``load``, ``capacity``                 gauge      units of work in flight, and at most
``heartbeat_lag_seconds``              gauge      how late the last heartbeat went out
``heartbeat_receive_seconds``          histogram  from a heartbeat's signed send time to its
                                                  handler (on the coordinator: to its registry),
                                                  directly or folded in a leader's summary
``reconnects_total``                   counter    broker reconnects
``coordinator_active``                 gauge      1 while this coordinator leads
``coordinator_epoch``                  gauge      its epoch
``coordinator_agents``                 gauge      agents it schedules on (its registry)
``coordinator_tasks``                  gauge      tasks it holds (parts included)
``coordinator_tasks_waiting{kind}``    gauge      unfinished tasks by what they wait for
                                                  (``protocol/coordinator/queries``; ready
                                                  ones are skill, resources or queued)
``coordinator_finals_total{state}``    counter    final results, by state
``coordinator_events_total{kind}``     counter    submissions, assigned, reassigned,
                                                  stale_results, cancelled…
``coordinator_decision_seconds``       histogram  state machine time per event
=====================================  =========  ===========================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..protocol.clusters.summary import MAX_MEMBERS, SUMMARY_TYPE
from ..protocol.errors import ConfigError
from .app import App, Middleware
from .context import AgentContext, Message
from .stats import MAX_TYPES, Latency

if TYPE_CHECKING:
    from .runtime import Agent
    from .tasking.executor import TaskExecutor

__all__ = ["HandlerTimer", "MetricsServer", "health_of", "install"]

log = logging.getLogger(__name__)

P = "robeing_"
MAX_MEMBERS_TIMED = 100_000  # members whose newest summarised beat is remembered
# Coordinator counters served as coordinator_events_total{kind} (the rest of its report
# is served as gauges or finals).
_EVENTS = (
    "submissions",
    "assigned",
    "reassigned",
    "refused",
    "stale_results",
    "attempts_timed_out",
    "cancelled",
    "bad_heartbeats",
    "connection_deaths",
    "unconfirmed_closes",
    "backups_activated",
)


class HandlerTimer(Middleware):
    """Times every handler, by message type (the middleware hooks around handlers), and
    how long heartbeats took to reach theirs (sender and receiver clocks: on one machine,
    or synchronised ones, the broker's queueing plus the receiver's backlog).

    A leader's ``cluster.summary`` carries each member's latest beat with its
    signed send time (``at``); each beat newer than the last one seen of that
    member is timed too — from the member's send to the summary's handler,
    which is when the coordinator's registry learns of it. Nothing here is
    trusted: a malformed summary is timed for what reads as a time, and its
    handler refuses it as ever.
    """

    def __init__(self) -> None:
        self.latency: dict[str, Latency] = {}
        self.heartbeat_receive = Latency()
        self._started: dict[int, float] = {}
        self._member_at: dict[str, float] = {}  # member -> newest beat timed from summaries

    def before_handle(self, agent: AgentContext, message: Message) -> None:
        if message.type == "heartbeat":
            self.heartbeat_receive.observe(max(0.0, time.time() - message.envelope.timestamp))
        elif message.type == SUMMARY_TYPE:
            self._time_summary(message.payload)
        self._started[id(message)] = time.perf_counter()

    def _time_summary(self, payload: Any) -> None:
        members = payload.get("members") if isinstance(payload, dict) else None
        if not isinstance(members, list):
            return
        now, seen = time.time(), self._member_at
        if len(seen) > MAX_MEMBERS_TIMED:
            seen.clear()  # bound memory against churn; a few beats are timed twice
        for entry in members[:MAX_MEMBERS]:
            at = entry.get("at") if isinstance(entry, dict) else None
            member = entry.get("id") if isinstance(entry, dict) else None
            if type(at) is float and isinstance(member, str) and at > seen.get(member, 0.0):
                seen[member] = at
                self.heartbeat_receive.observe(max(0.0, now - at))

    def after_handle(
        self, agent: AgentContext, message: Message, result: Any, error: BaseException | None
    ) -> None:
        started = self._started.pop(id(message), None)
        if started is None:
            return
        kind = message.type
        if kind not in self.latency and len(self.latency) >= MAX_TYPES:
            kind = "other"
        self.latency.setdefault(kind, Latency()).observe(time.perf_counter() - started)


class AgentCollector:
    """Turns one agent's counters into Prometheus series at each scrape."""

    def __init__(
        self, agent: Agent, timer: HandlerTimer, tasks: TaskExecutor | None = None
    ) -> None:
        self.agent = agent
        self.timer = timer
        self.tasks = tasks

    def collect(self) -> Iterator[Metric]:
        agent, st = self.agent, self.agent.stats
        info = GaugeMetricFamily(P + "agent_info", "The agent.", labels=["id", "role", "cluster"])
        info.add_metric([agent.id, agent.settings.role, agent.cluster_id], 1)
        yield info
        yield _counter("messages_received", "Accepted messages.", ["type"], st.by_type)
        yield _counter("messages_sent", "Published messages.", ["type"], agent.outbox.sent_types)
        yield _counter("rejections", "Refused messages.", ["reason"], st.rejected)
        yield _counter("messages_failed", "Handler failures.", [], {(): st.failed})
        yield _counter("duplicates", "Redeliveries dropped.", [], {(): st.duplicates})
        ignored = {(): st.ignored_broadcasts}
        yield _counter("broadcasts_ignored", "Broadcasts nobody here handles.", [], ignored)
        yield _histogram("handler_seconds", "Handler latency.", ["type"], self.timer.latency)
        beats = {(): self.timer.heartbeat_receive}
        yield _histogram("heartbeat_receive_seconds", "Heartbeat send to handler.", [], beats)
        if self.tasks is not None:
            yield _counter("tasks", "Attempts run.", ["type", "outcome"], dict(self.tasks.outcomes))
            yield _histogram("task_seconds", "Attempt durations.", ["type"], self.tasks.durations)
            cancelled = {(): self.tasks.cancelled}
            yield _counter("tasks_cancelled", "Attempts stopped by a cancel.", [], cancelled)
        yield _gauge("load", "Units of work in flight.", agent.load)
        yield _gauge("capacity", "Units of work taken at once.", agent.settings.concurrency)
        yield _gauge("heartbeat_lag_seconds", "Lateness of the last beat.", agent.heartbeats.lag)
        reconnects = {(): getattr(agent.transport, "reconnects", 0)}
        yield _counter("reconnects", "Broker reconnects.", [], reconnects)
        report = self._coordinator_report()
        if report is not None:
            yield from _coordinator(report)

    def _coordinator_report(self) -> dict[str, Any] | None:
        for extra in self.agent.heartbeats.extras:
            try:
                section = extra().get("coordinator")
            except Exception:
                log.exception("heartbeat extra %r failed", extra)
                continue
            if isinstance(section, dict):
                return section
        return None


def _coordinator(report: Mapping[str, Any]) -> Iterator[Metric]:
    yield _gauge("coordinator_active", "1 while it leads.", 1 if report.get("active") else 0)
    for key in ("epoch", "agents", "tasks"):
        value = report.get(key)
        if isinstance(value, int | float):
            yield _gauge(f"coordinator_{key}", f"The coordinator's {key}.", value)
    waiting = report.get("waiting")
    if isinstance(waiting, dict):
        family = GaugeMetricFamily(
            P + "coordinator_tasks_waiting", "Unfinished tasks by kind.", labels=["kind"]
        )
        for kind, n in sorted(waiting.items()):
            family.add_metric([str(kind)], n)
        yield family
    finals = {
        (key.removeprefix("final_"),): n
        for key, n in report.items()
        if key.startswith("final_") and isinstance(n, int)
    }
    yield _counter("coordinator_finals", "Final results by state.", ["state"], finals)
    events = {(k,): report[k] for k in _EVENTS if isinstance(report.get(k), int)}
    yield _counter("coordinator_events", "What the coordinator did.", ["kind"], events)
    decisions = Latency.from_data(report.get("decisions"))
    if decisions is not None:
        yield _histogram(
            "coordinator_decision_seconds", "State machine time per event.", [], {(): decisions}
        )


def _key(label: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in label) if isinstance(label, tuple) else (str(label),)


def _counter(
    name: str, doc: str, labels: list[str], values: Mapping[Any, int | float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(P + name, doc, labels=labels)
    for label, value in sorted(values.items(), key=lambda kv: _key(kv[0])):
        family.add_metric(list(_key(label)) if labels else [], value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, value=value)


def _histogram(
    name: str, doc: str, labels: list[str], values: Mapping[Any, Latency]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(P + name, doc, labels=labels)
    for label, latency in sorted(values.items(), key=lambda kv: _key(kv[0])):
        buckets = [(_le(bound), n) for bound, n in latency.cumulative()]
        family.add_metric(list(_key(label)) if labels else [], buckets, latency.total)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def health_of(agent: Agent) -> tuple[bool, str]:
    """Whether ``agent`` is ready (started and connected), and its state in a word."""
    state = agent.state
    if state != "alive":
        return False, state
    if not agent.transport.is_connected:
        return False, "disconnected"
    return True, state


class MetricsServer:
    """A tiny HTTP server for ``GET /metrics`` and ``/healthz``, on the agent's event loop.

    Args:
        registry: what to serve.
        port: the TCP port (0: any free one; :attr:`port` says which).
        host: the address to listen on.
        health: says whether the agent is ready and why (``/healthz``: 200 or 503);
            without it ``/healthz`` is 404.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int,
        host: str = "0.0.0.0",
        health: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        self.registry = registry
        self.port = port
        self.host = host
        self.health = health
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen.

        Raises:
            ConfigError: the port cannot be bound (in use, or not allowed).
        """
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on port {self.port}: {exc.strerror}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics at http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = (await reader.readline()).decode("latin-1").split()
                while (await reader.readline()).strip():
                    pass  # headers: nothing in them matters here
            path = request[1].split("?")[0] if len(request) >= 2 else ""
            if request[:1] == ["GET"] and path in ("/metrics", "/"):
                status, kind, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif request[:1] == ["GET"] and path == "/healthz" and self.health is not None:
                ok, why = self.health()
                status = "200 OK" if ok else "503 Service Unavailable"
                kind, body = "text/plain", why.encode() + b"\n"
            else:
                status, kind, body = "404 Not Found", "text/plain", b"try /metrics\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        except Exception:
            log.exception("serving metrics failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def install(agent: Agent, tasks: TaskExecutor | None = None, *, port: int) -> MetricsServer:
    """Serve ``agent``'s metrics on ``port`` from its start to its stop.

    Raises:
        ConfigError: at the agent's start, when the port cannot be bound.
    """
    timer = HandlerTimer()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent, timer, tasks))
    server = MetricsServer(registry, port, health=lambda: health_of(agent))
    hooks = App(name="metrics", middleware=[timer])
    hooks.on_start(lambda _agent: server.start())
    hooks.on_stop(lambda _agent: server.stop())
    agent.include(hooks)
    return server
