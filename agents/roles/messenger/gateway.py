"""An HTTP/JSON gateway on a messenger, for clients that do not speak robeing.

``robeing agent --role messenger --http 127.0.0.1:8080`` serves, on the
agent's own event loop (aiohttp, like aio-pika, is asyncio through and
through, so one loop serves both)::

    POST /tasks               {"type", "payload", "id"?, "skills"?, "agents"?, "priority"?,
                               "deadline"? (seconds from now)}      → 202 {"id", "state"}
    GET  /tasks/{id}          → 200 {"id", "state", "result" | "error", "done", "total"}
    GET  /agents              → 200 {"agents": [{id, role, priority, specializations, …}]}
    POST /messages/{agent}    {"type", "payload", "request"?: bool}  → 200 {"sent"} | {"reply"}

Every request carries ``Authorization: Bearer <token>`` — a token from
``robeing keys token --id CLIENT``, bound to that client's certificate
(:mod:`robeing.protocol.tokens`): revoked or expired certificates end their
tokens. Each client is rate limited (``--http-rate`` per second, twice that
in a burst: 429 with ``Retry-After``), bodies are limited to 1 MiB (413),
and every error is JSON, ``{"error": {"status", "reason", "message"}}``,
with the status that says what went wrong (400 malformed, 401 no or bad
token, 403 a message type reserved to the protocol, 404 unknown task or
agent, 405, 413, 415 not JSON, 429, 502 the agent refused, 504 no answer).

Tasks are submitted by the messenger (the submitter the coordinator sees)
under ids namespaced by client (``<client>/<id>``), so one client can
neither read nor collide with another's tasks; their finals come back to
the messenger's reply queue and are kept (bounded) for ``GET /tasks/{id}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

from ....broker import topology as topo
from ....protocol.envelope import Envelope, new_id
from ....protocol.errors import AckTimeout, RobeingError, UnknownPeer, Unroutable
from ....protocol.records import COORDINATORS
from ....protocol.roles import ROLES
from ....protocol.taskmsgs import FinalResult, Submission, TaskRequest
from ....protocol.tokens import TokenBucket, TokenError, verify_token
from ...context import AgentContext, Message
from ...heartbeats import AgentStatus, follow_heartbeats

__all__ = ["MAX_BODY", "RESERVED", "Gateway", "install_gateway", "problem"]

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
TASKS_KEPT = 10_000
ALIVE_WITHIN_S = 5.0
# Message types an HTTP client may not have the messenger send: the protocol's own.
RESERVED = ("task.", "heartbeat", "vote.", "pbft.", "guardian.", "coordinator.", "transfer.",
            "relay.", "quarantine.", "hello", "crl.", "ack", "reply")  # fmt: skip


def problem(status: int, message: str, **headers: str) -> web.Response:
    """A JSON error response."""
    reason = web.Response(status=status).reason
    body = {"error": {"status": status, "reason": reason, "message": message}}
    return web.json_response(body, status=status, headers=headers)


class Gateway:
    """The HTTP side of a messenger: authentication, limits, and the four routes."""

    def __init__(self, agent: AgentContext, rate: float) -> None:
        self.agent = agent
        self.limits = TokenBucket(rate, max(1.0, 2 * rate))
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()  # internal id -> state
        self.agents: dict[str, AgentStatus] = {}
        self.requests = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, agent: AgentContext) -> None:
        host, _, port = (agent.settings.http or "").rpartition(":")
        agent.handle_answer("task.final", self._on_final)
        agent.handle_answer("task.finals", self._on_finals)
        agent.handle_answer("task.refused", self._on_refused)
        agent.handle_answer("task.progress", self._on_progress)
        await follow_heartbeats(agent, self._on_status, f"gateway-{new_id()[:6]}")
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        app.add_routes(
            [
                web.post("/tasks", self.post_task),
                web.get("/tasks/{id}", self.get_task),
                web.get("/agents", self.get_agents),
                web.post("/messages/{agent}", self.post_message),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host or "127.0.0.1", int(port)).start()
        log.info("HTTP gateway on http://%s:%s", host or "127.0.0.1", port)

    async def stop(self, agent: AgentContext) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- authentication, limits, errors ---------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        try:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return self._refuse(401, "an Authorization: Bearer <token> header is required")
            trust = self.agent.trust
            try:
                bearer = verify_token(
                    auth[7:].strip(), self.agent.clock(), trust.check_certificate, trust.verify
                )
            except TokenError as exc:
                return self._refuse(401, str(exc))
            wait = self.limits.take(bearer.client, time.monotonic())
            if wait > 0:
                return self._refuse(429, "rate limit exceeded", **{"Retry-After": f"{wait:.0f}"})
            request["client"] = bearer.client
            return await handler(request)
        except web.HTTPException as exc:  # 404, 405, 413 from aiohttp itself
            return self._refuse(exc.status, exc.text or exc.reason or "")

    def _refuse(self, status: int, message: str, **headers: str) -> web.Response:
        self.refused += 1
        if status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="robeing"')
        return problem(status, message, **headers)

    async def _json(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise _Refusal(415, "send JSON (Content-Type: application/json)")
        try:
            body = await request.json(loads=json.loads)
        except json.JSONDecodeError as exc:
            raise _Refusal(400, f"malformed JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "the body must be a JSON object")
        return body

    # -- routes -----------------------------------------------------------------------

    async def post_task(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
            client = request["client"]
            user_id = body.get("id") or new_id()
            if not isinstance(user_id, str) or "/" in user_id:
                raise _Refusal(400, "'id' must be a string without '/'")
            deadline = body.get("deadline")
            if deadline is not None and (type(deadline) not in (int, float) or deadline <= 0):
                raise _Refusal(400, "'deadline' is seconds from now, a positive number")
            try:
                req = TaskRequest(
                    id=f"{client}/{user_id}",
                    type=body["type"],
                    payload=body.get("payload"),
                    skills=tuple(body.get("skills") or ()),
                    agents=body.get("agents", 1),
                    priority=body.get("priority", 5),
                    deadline=None if deadline is None else time.time() + deadline,
                )
            except (KeyError, TypeError) as exc:
                raise _Refusal(400, f"a task needs 'type' and valid fields ({exc})") from None
            if not isinstance(req.type, str) or (problems := req.problems()):
                raise _Refusal(400, "; ".join(problems) if req.type else "'type' is required")
            await self._submit(req)
            return web.json_response({"id": user_id, "state": "submitted"}, status=202)
        except _Refusal as exc:
            return self._refuse(exc.status, exc.message)

    async def _submit(self, req: TaskRequest) -> None:
        env = Envelope(
            "task.submit",
            Submission((req,), self.agent.reply_queue).to_data(),
            receiver=COORDINATORS,
            priority=req.priority,
        )
        key = topo.task_routing_key(req.skills[0] if req.skills else None)
        try:
            await self.agent.publish_event(key, env)
        except RobeingError as exc:
            raise _Refusal(502, f"the task could not be submitted: {exc}") from None
        self.tasks[req.id] = {"state": "submitted", "done": 0, "total": req.agents}
        while len(self.tasks) > TASKS_KEPT:
            self.tasks.popitem(last=False)

    async def get_task(self, request: web.Request) -> web.Response:
        user_id = request.match_info["id"]
        state = self.tasks.get(f"{request['client']}/{user_id}")
        if state is None:  # another client's task is as unknown as no task at all
            return self._refuse(404, f"no task {user_id!r} of yours here")
        return web.json_response({"id": user_id, **state})

    async def get_agents(self, request: web.Request) -> web.Response:
        now = self.agent.clock()
        rows = [
            {
                "id": a.id,
                "role": a.role,
                "priority": ROLES[a.role].priority if a.role in ROLES else None,
                "specializations": a.specializations,
                "state": a.state,
                "load": a.load,
                "capacity": a.capacity,
                "task_types": a.extra.get("task_types"),
                "last_seen_s": round(now - a.last_seen, 2),
            }
            for a in sorted(self.agents.values(), key=lambda a: a.id)
            if now - a.last_seen <= ALIVE_WITHIN_S and a.state != "leaving"
        ]
        return web.json_response({"agents": rows})

    async def post_message(self, request: web.Request) -> web.Response:
        target = request.match_info["agent"]
        try:
            body = await self._json(request)
            kind = body.get("type")
            if not isinstance(kind, str) or not kind:
                raise _Refusal(400, "a message needs a 'type'")
            if kind.startswith(RESERVED):
                raise _Refusal(403, f"{kind!r} is reserved to the protocol")
            try:
                if body.get("request"):
                    reply = await self.agent.request(target, kind, body.get("payload"), timeout=10)
                    return web.json_response({"to": target, "reply": reply})
                await self.agent.send(target, kind, body.get("payload"))
            except (Unroutable, UnknownPeer) as exc:
                raise _Refusal(404, str(exc)) from None
            except AckTimeout as exc:
                raise _Refusal(504, str(exc)) from None
            except RobeingError as exc:
                raise _Refusal(502, f"{target} refused it: {exc}") from None
            except (TypeError, ValueError) as exc:
                raise _Refusal(400, f"the payload cannot be sent: {exc}") from None
            return web.json_response({"to": target, "sent": True})
        except _Refusal as exc:
            return self._refuse(exc.status, exc.message)

    # -- answers from the coordinator -------------------------------------------------------

    def _on_status(self, status: AgentStatus) -> None:
        self.agents[status.id] = status
        if len(self.agents) > 10_000:
            self.agents.pop(next(iter(self.agents)))

    def _on_final(self, msg: Message) -> None:
        self._final(msg.payload)

    def _on_finals(self, msg: Message) -> None:
        for item in msg.payload if isinstance(msg.payload, list) else []:
            self._final(item)

    def _final(self, data: Any) -> None:
        try:
            final = FinalResult.from_data(data)
        except RobeingError:
            return
        state = self.tasks.get(final.task_id)
        if state is not None:
            state.update(state=final.state, done=state["total"])
            if final.ok:
                state["result"] = final.result
            else:
                state["error"] = final.error

    def _on_refused(self, msg: Message) -> None:
        for item in msg.payload if isinstance(msg.payload, list) else []:
            state = self.tasks.get(str(item.get("task_id"))) if isinstance(item, dict) else None
            if state is not None:
                state.update(state="refused", error=str(item.get("reason", "refused")))

    def _on_progress(self, msg: Message) -> None:
        p = msg.payload if isinstance(msg.payload, dict) else {}
        state = self.tasks.get(str(p.get("task_id")))
        if state is not None and state["state"] in ("submitted", "running"):
            state.update(state="running", done=p.get("done", 0), total=p.get("total", 1))
            if isinstance(p.get("note"), str):
                state["note"] = p["note"][:500]

    def report(self) -> dict[str, Any]:
        return {"requests": self.requests, "refused": self.refused, "tasks": len(self.tasks)}


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def install_gateway(agent: AgentContext) -> Gateway:
    """Serve the HTTP gateway of a messenger started with ``--http``."""
    gateway = Gateway(agent, agent.settings.http_rate)
    agent.on_start(gateway.start)
    agent.on_stop(gateway.stop)
    return gateway
