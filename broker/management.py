"""A small client for the RabbitMQ management HTTP API.

Used by the test fixtures (a fresh vhost per session), by ``robeing status``
(queue depths, consumers, dead letters), by checks that consumers came back
after a broker restart, and by ``robeing broker users | setup`` (users,
permissions and the shared topology; see :mod:`.permissions`). The
management plugin is enabled by ``deploy/local-broker.sh`` and by the broker
definitions in ``deploy/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from ..protocol.errors import BrokerError
from .addresses import (
    DEFAULT_MANAGEMENT_PORT,
    amqp_urls,
    default_management_urls,
    management_urls,
    vhost_of_one,
)
from .permissions import HASHING_ALGORITHM, BrokerUser
from .topology import QueueSpec


@dataclass(frozen=True, slots=True)
class ManagementSettings:
    """Where the management API is, derived from an AMQP URL by default.

    ``base_url`` may list several nodes' APIs, comma-separated; calls go to
    the first that answers (see :class:`Management`).
    """

    base_url: str = "http://127.0.0.1:15672"
    username: str = "guest"
    password: str = field(default="guest", repr=False)

    @staticmethod
    def from_amqp_url(
        amqp_url: str,
        port: int = DEFAULT_MANAGEMENT_PORT,
        scheme: str = "http",
        override: str | None = None,
    ) -> ManagementSettings:
        """The API of each node of ``amqp_url`` (a list too), logging in as its user.

        Args:
            override: ``ROBEING_MANAGEMENT_URL``: the API's address(es) when they
                are not ``<scheme>://<amqp host>:<port>`` (amqps, managed brokers).

        Raises:
            ConfigError: ``amqp_url`` or ``override`` is not a valid list.
        """
        first = urlsplit(amqp_urls(amqp_url)[0])
        if override:
            base = ",".join(management_urls(override))
        else:
            defaults = default_management_urls(amqp_url, port)
            base = ",".join(u.replace("http://", f"{scheme}://", 1) for u in defaults)
        return ManagementSettings(
            base,
            unquote(first.username or "guest"),
            unquote(first.password or "guest"),
        )


def vhost_of(amqp_url: str) -> str:
    """The vhost named by an AMQP URL (``/`` when none is given).

    For a list, the first entry's: :func:`.addresses.amqp_urls` makes sure
    every entry names the same one.
    """
    return vhost_of_one(amqp_url.split(",", 1)[0].strip())


def with_vhost(amqp_url: str, vhost: str) -> str:
    """``amqp_url`` (each entry of a list) pointing at ``vhost`` instead."""
    return ",".join(
        urlsplit(u.strip())._replace(path="/" + quote(vhost, safe="")).geturl()
        for u in amqp_url.split(",")
    )


def has_credentials(amqp_url: str) -> bool:
    """Whether ``amqp_url`` names a user (``amqp://user[:password]@host/``)."""
    return bool(urlsplit(amqp_url.split(",", 1)[0].strip()).username)


def with_credentials(amqp_url: str, username: str, password: str) -> str:
    """``amqp_url`` (each entry of a list) logging in as ``username`` with ``password``."""
    creds = f"{quote(username, safe='')}:{quote(password, safe='')}"
    out = []
    for u in amqp_url.split(","):
        parts = urlsplit(u.strip())
        host = parts.netloc.rsplit("@", 1)[-1]
        out.append(parts._replace(netloc=f"{creds}@{host}").geturl())
    return ",".join(out)


class Management:
    """Async management API client.

    With several API addresses (a cluster), calls go to the one that last
    answered; when it cannot be reached the next is tried. A request that
    may have reached an API before the failure (a timeout while reading the
    answer) is retried elsewhere only if repeating it is harmless (GET, PUT,
    DELETE); a POST is then reported instead.

    Raises:
        BrokerError: from every call, when no API is reachable or one answers
            with an error status.
    """

    def __init__(self, settings: ManagementSettings, timeout: float = 10.0) -> None:
        self.settings = settings
        self._bases = [base.strip().rstrip("/") + "/api" for base in settings.base_url.split(",")]
        self._client = httpx.AsyncClient(
            auth=(settings.username, settings.password),
            timeout=timeout,
        )

    async def __aenter__(self) -> Management:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        last: httpx.HTTPError | None = None
        for _ in range(len(self._bases)):
            base = self._bases[0]
            try:
                return await self._client.request(method, base + path, **kw)
            except httpx.HTTPError as exc:
                last = exc
                unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if not unsent and method == "POST":
                    break
                self._bases.append(self._bases.pop(0))  # the next node's API, from now on
        raise BrokerError(
            f"management API at {self.settings.base_url} unreachable: {last}"
        ) from last

    async def _request(self, method: str, path: str, *, missing_ok: bool = False, **kw: Any) -> Any:
        """Call the API; with ``missing_ok`` a 404 answers None instead of raising."""
        resp = await self._send(method, path, **kw)
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code >= 400:
            raise BrokerError(
                f"management API {method} {path}: {resp.status_code} {resp.text[:200]}"
            )
        return resp.json() if resp.content else None

    @staticmethod
    def _vh(vhost: str) -> str:
        return quote(vhost, safe="")

    async def overview(self) -> dict[str, Any]:
        return await self._request("GET", "/overview")

    async def create_vhost(self, vhost: str, user: str | None = None) -> None:
        """Create ``vhost`` and give ``user`` (default: our user) full permissions."""
        await self._request("PUT", f"/vhosts/{self._vh(vhost)}")
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        who = quote(user or self.settings.username, safe="")
        await self._request("PUT", f"/permissions/{self._vh(vhost)}/{who}", json=perms)

    async def delete_vhost(self, vhost: str) -> None:
        await self._request("DELETE", f"/vhosts/{self._vh(vhost)}", missing_ok=True)

    async def queues(self, vhost: str) -> list[dict[str, Any]]:
        return await self._request("GET", f"/queues/{self._vh(vhost)}")

    async def queue(self, vhost: str, name: str) -> dict[str, Any]:
        path = f"/queues/{self._vh(vhost)}/{quote(name, safe='')}"
        return await self._request("GET", path)

    async def consumers(self, vhost: str) -> list[dict[str, Any]]:
        return await self._request("GET", f"/consumers/{self._vh(vhost)}")

    async def connections(self, vhost: str | None = None) -> list[dict[str, Any]]:
        path = f"/vhosts/{self._vh(vhost)}/connections" if vhost else "/connections"
        return await self._request("GET", path)

    async def close_connection(self, name: str, reason: str = "closed by robeing") -> None:
        path = f"/connections/{quote(name, safe='')}"
        await self._request("DELETE", path, headers={"X-Reason": reason})

    async def get_messages(
        self, vhost: str, queue: str, count: int = 100, requeue: bool = True
    ) -> list[dict[str, Any]]:
        """Peek at (or take, with ``requeue=False``) up to ``count`` messages."""
        body = {
            "count": count,
            "ackmode": "ack_requeue_true" if requeue else "ack_requeue_false",
            "encoding": "base64",
        }
        path = f"/queues/{self._vh(vhost)}/{quote(queue, safe='')}/get"
        return await self._request("POST", path, json=body)

    # -- users and their permissions (robeing broker users) -------------------------

    async def user(self, name: str) -> dict[str, Any] | None:
        """The user ``name`` as the API shows it (None if there is none)."""
        return await self._request("GET", f"/users/{quote(name, safe='')}", missing_ok=True)

    async def put_user(self, user: BrokerUser, password_hash: str) -> None:
        """Create or update ``user``: password, tags, permissions, topic permissions.

        Args:
            user: what :func:`~robeing.broker.permissions.plan_users` built.
            password_hash: :func:`~robeing.broker.permissions.hash_password` of
                its password (the password itself never leaves this machine).
        """
        who = quote(user.name, safe="")
        body = {
            "password_hash": password_hash,
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": ",".join(user.tags),
        }
        await self._request("PUT", f"/users/{who}", json=body)
        for perm in user.permissions:
            grant = {"configure": perm.configure, "write": perm.write, "read": perm.read}
            await self._request("PUT", f"/permissions/{self._vh(perm.vhost)}/{who}", json=grant)
        for topic in user.topic_permissions:
            grant = {"exchange": topic.exchange, "write": topic.write, "read": topic.read}
            path = f"/topic-permissions/{self._vh(topic.vhost)}/{who}"
            await self._request("PUT", path, json=grant)

    async def delete_user(self, name: str, reason: str = "user deleted by robeing") -> int:
        """Delete user ``name``, then close its open connections.

        Deleting first means a closed connection cannot log in again.

        Returns:
            How many connections were closed.
        """
        await self._request("DELETE", f"/users/{quote(name, safe='')}", missing_ok=True)
        conns = await self._request("GET", "/connections", params={"columns": "name,user"})
        closed = 0
        for conn in conns or []:
            if conn.get("user") == name:
                path = f"/connections/{quote(conn['name'], safe='')}"
                await self._request("DELETE", path, missing_ok=True, headers={"X-Reason": reason})
                closed += 1
        return closed

    # -- the shared topology (robeing broker setup) ---------------------------------

    async def declare_exchange(self, vhost: str, name: str, kind: str) -> None:
        """Declare a durable exchange of type ``kind`` (idempotent)."""
        body = {"type": kind, "durable": True, "auto_delete": False, "internal": False}
        path = f"/exchanges/{self._vh(vhost)}/{quote(name, safe='')}"
        await self._request("PUT", path, json=body)

    async def declare_queue(self, vhost: str, spec: QueueSpec) -> None:
        """Declare ``spec`` (idempotent; an exclusive queue cannot be declared here).

        Raises:
            BrokerError: also when the queue exists with other arguments.
        """
        body = {
            "durable": spec.durable,
            "auto_delete": spec.auto_delete,
            "arguments": dict(spec.arguments or {}),
        }
        path = f"/queues/{self._vh(vhost)}/{quote(spec.name, safe='')}"
        await self._request("PUT", path, json=body)

    async def bind_queue(self, vhost: str, exchange: str, queue: str, routing_key: str) -> None:
        """Bind ``queue`` to ``exchange`` with ``routing_key`` (idempotent)."""
        path = f"/bindings/{self._vh(vhost)}/e/{quote(exchange, safe='')}/q/{quote(queue, safe='')}"
        await self._request("POST", path, json={"routing_key": routing_key, "arguments": {}})
