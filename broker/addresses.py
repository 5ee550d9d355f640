"""Several broker addresses: parsing, validation and the failover order.

``AMQP_URL`` may name every node of a RabbitMQ cluster, comma-separated::

    amqp://u:p@rabbit-1:5672/prod,amqp://u:p@rabbit-2:5672/prod,amqp://u:p@rabbit-3:5672/prod

Invariants of a parsed list (:func:`amqp_urls`):
    * at least one entry, none empty, none repeated;
    * every entry is ``amqp://`` or ``amqps://`` with a host;
    * every entry names the same vhost and the same login (user and
      password): the nodes are one cluster, which shares its vhosts and
      users, so a difference is a typo that would only show after a
      failover, when it is hardest to diagnose.

The management API may be given the same way (``ROBEING_MANAGEMENT_URL``);
by default it is ``http://<host>:15672`` of each AMQP address.

A process tries the addresses in its own order (:func:`failover_order`): a
shuffle seeded by the process, so a fleet started with one list spreads over
the nodes instead of all landing on the first, and one process's order is
the same every time it is asked (its log lines make sense).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from ..protocol.errors import ConfigError

AMQP_SCHEMES = ("amqp", "amqps")
HTTP_SCHEMES = ("http", "https")
DEFAULT_MANAGEMENT_PORT = 15672


def _entries(raw: str, what: str) -> list[str]:
    if ";" in raw:
        raise ConfigError(f"{what} separates several URLs with ',', not ';': {safe(raw)!r}")
    entries = [part.strip() for part in raw.split(",")]
    for i, entry in enumerate(entries, 1):
        if not entry:
            raise ConfigError(f"{what} has an empty entry (number {i} of {len(entries)})")
    if len(set(entries)) < len(entries):
        raise ConfigError(f"{what} names the same URL twice")
    return entries


def amqp_urls(raw: str) -> tuple[str, ...]:
    """The broker URLs of a comma-separated ``AMQP_URL``, validated.

    Raises:
        ConfigError: an empty or repeated entry, a scheme other than amqp or
            amqps, a missing host, or entries naming different vhosts or logins
            (one line naming the problem).
    """
    entries = _entries(raw, "AMQP_URL")
    vhosts: set[str] = set()
    logins: set[tuple[str | None, str | None]] = set()
    for entry in entries:
        parts = urlsplit(entry)
        if parts.scheme not in AMQP_SCHEMES:
            raise ConfigError(f"AMQP_URL must start with amqp:// or amqps://, got {safe(entry)!r}")
        try:
            host = parts.hostname
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ConfigError(f"AMQP_URL entry {safe(entry)!r}: {exc}") from None
        if not host:
            raise ConfigError(f"AMQP_URL entry {safe(entry)!r} names no host")
        vhosts.add(vhost_of_one(entry))
        logins.add((parts.username, parts.password))
    if len(vhosts) > 1:
        raise ConfigError(
            f"AMQP_URL entries name different vhosts ({', '.join(sorted(map(repr, vhosts)))}): "
            "the nodes of one cluster share one vhost"
        )
    if len(logins) > 1:
        raise ConfigError(
            "AMQP_URL entries log in differently: give every node the same user and password"
        )
    return tuple(entries)


def management_urls(raw: str) -> tuple[str, ...]:
    """The management API base URLs of a comma-separated list, validated.

    Raises:
        ConfigError: an empty or repeated entry, or one that is not http(s)
            with a host.
    """
    entries = [e.rstrip("/") for e in _entries(raw, "ROBEING_MANAGEMENT_URL")]
    for entry in entries:
        parts = urlsplit(entry)
        if parts.scheme not in HTTP_SCHEMES or not parts.hostname:
            raise ConfigError(
                f"ROBEING_MANAGEMENT_URL entries must be http(s)://host[:port], got {entry!r}"
            )
    return tuple(entries)


def default_management_urls(amqp: str, port: int = DEFAULT_MANAGEMENT_PORT) -> tuple[str, ...]:
    """``http://<host>:<port>`` for each node of ``amqp`` (an ``AMQP_URL``), in its order."""
    out: list[str] = []
    for entry in amqp_urls(amqp):
        host = urlsplit(entry).hostname or "127.0.0.1"
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        url = f"http://{host}:{port}"
        if url not in out:
            out.append(url)
    return tuple(out)


def vhost_of_one(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def failover_order(urls: Sequence[str], seed: str | int) -> list[str]:
    """``urls`` in the order this process tries them: a shuffle seeded by ``seed``.

    The same seed gives the same order; different processes (seeded by their
    pid and id) spread over the nodes.
    """
    order = list(urls)
    random.Random(str(seed)).shuffle(order)
    return order


def safe(url: str) -> str:
    """``url`` (or a list of them) without passwords, for messages and logs."""
    return ",".join(_safe_one(part) for part in url.split(","))


def _safe_one(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("amqp", url)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
