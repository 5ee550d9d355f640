"""A small client for the RabbitMQ management HTTP API.

Used by the test fixtures (a fresh vhost per session), by ``robeing status``
(queue depths, consumers, dead letters) and by checks that consumers came
back after a broker restart. The management plugin is enabled by
``deploy/local-broker.sh`` and by the broker definitions in ``deploy/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from ..protocol.errors import BrokerError


@dataclass(frozen=True, slots=True)
class ManagementSettings:
    """Where the management API is, derived from an AMQP URL by default."""

    base_url: str = "http://127.0.0.1:15672"
    username: str = "guest"
    password: str = "guest"

    @staticmethod
    def from_amqp_url(amqp_url: str, port: int = 15672, scheme: str = "http") -> ManagementSettings:
        parts = urlsplit(amqp_url)
        host = parts.hostname or "127.0.0.1"
        return ManagementSettings(
            f"{scheme}://{host}:{port}",
            unquote(parts.username or "guest"),
            unquote(parts.password or "guest"),
        )


def vhost_of(amqp_url: str) -> str:
    """The vhost named by an AMQP URL (``/`` when none is given)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def with_vhost(amqp_url: str, vhost: str) -> str:
    """``amqp_url`` pointing at ``vhost`` instead."""
    parts = urlsplit(amqp_url)
    return parts._replace(path="/" + quote(vhost, safe="")).geturl()


class Management:
    """Async management API client.

    Raises:
        BrokerError: from every call, when the API is unreachable or answers
            with an error status.
    """

    def __init__(self, settings: ManagementSettings, timeout: float = 10.0) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            base_url=settings.base_url + "/api",
            auth=(settings.username, settings.password),
            timeout=timeout,
        )

    async def __aenter__(self) -> Management:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise BrokerError(
                f"management API at {self.settings.base_url} unreachable: {exc}"
            ) from exc
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
        try:
            await self._request("DELETE", f"/vhosts/{self._vh(vhost)}")
        except BrokerError as exc:
            if " 404 " not in str(exc):
                raise

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
