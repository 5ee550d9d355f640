#!/usr/bin/env python3
"""Check that deploy/rabbitmq/definitions.json matches what the agents declare.

RabbitMQ refuses to redeclare a queue or exchange with different properties
or arguments (PRECONDITION_FAILED), so the objects the broker imports at boot
must be exactly the ones robeing's code declares. This script derives the
expected topology from the installed package — the specs in
``robeing.broker.topology`` and the calls ``AmqpTransport.declare_topology``
makes, traced without a broker — and compares it with the definitions file:

    python deploy/check-definitions.py [path/to/definitions.json]

It also checks that the file is self-consistent (every object's vhost is
defined, every permission's user exists, some user may use the vhost).

Exit status: 0 when everything matches, 1 on a mismatch (each one is listed),
2 when the check cannot run (robeing not installed, unreadable file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_FILE = Path(__file__).resolve().parent / "rabbitmq" / "definitions.json"
VHOST = "/"


def die(message: str) -> NoReturn:
    print(f"check-definitions: {message}", file=sys.stderr)
    sys.exit(2)


# -- what the code declares ------------------------------------------------------


def expected_topology() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], set[tuple]]:
    """Exchanges and queues by name, and bindings, as robeing declares them."""
    try:
        from robeing.broker import queues as queues_module
        from robeing.broker import topology as topo
    except ImportError as exc:
        die(f"cannot import robeing ({exc}); run with the Python where robeing is installed")

    exchanges: dict[str, dict[str, Any]] = {}
    queues: dict[str, dict[str, Any]] = {}
    bindings: set[tuple] = set()

    class Queue:
        def __init__(self, name: str) -> None:
            self.name = name

        async def bind(self, exchange: str, routing_key: str = "", **_: Any) -> None:
            bindings.add((exchange, self.name, "queue", routing_key))

    class Channel:
        """Stands in for an aio-pika channel; keeps aio-pika's defaults."""

        async def declare_exchange(
            self,
            name: str,
            type: Any = "direct",
            *,
            durable: bool = False,
            auto_delete: bool = False,
            internal: bool = False,
            passive: bool = False,
            arguments: dict[str, Any] | None = None,
            timeout: float | None = None,
        ) -> None:
            exchanges[name] = {
                "type": str(getattr(type, "value", type)),
                "durable": durable,
                "auto_delete": auto_delete,
                "internal": internal,
                "arguments": dict(arguments or {}),
            }

        async def declare_queue(
            self,
            name: str,
            *,
            durable: bool = False,
            exclusive: bool = False,
            auto_delete: bool = False,
            arguments: dict[str, Any] | None = None,
            **_: Any,
        ) -> Queue:
            if exclusive:
                die(f"the topology declares exclusive queue {name!r}; cannot be predefined")
            queues[name] = {
                "durable": durable,
                "auto_delete": auto_delete,
                "arguments": dict(arguments or {}),
            }
            return Queue(name)

        async def close(self) -> None:
            pass

    class Connection:
        async def channel(self) -> Channel:
            return Channel()

    # What a coordinator declares, with the defaults an agent runs with (Settings.topology).
    try:
        asyncio.run(
            queues_module.declare_topology(
                Connection(), topo.TopologySettings(), owner=True, where="check-definitions"
            )
        )
    except SystemExit:
        raise
    except Exception as exc:  # the declaration changed shape: say so, do not guess
        die(f"cannot trace robeing.broker.queues.declare_topology ({type(exc).__name__}: {exc})")

    # Cross-check the trace against the module's own data.
    for name, kind in topo.EXCHANGES:
        if exchanges.get(name, {}).get("type") != kind:
            die(f"traced exchange {name!r} disagrees with topology.EXCHANGES")
    settings = topo.TopologySettings()
    for spec in (
        topo.dead_letter_spec(),
        topo.task_queue_spec(settings),
        topo.heartbeat_queue_spec(settings),
    ):
        if queues.get(spec.name, {}).get("arguments") != dict(spec.arguments or {}):
            die(f"traced queue {spec.name!r} disagrees with robeing.broker.topology")
    return exchanges, queues, bindings


# -- comparison ----------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal with types: 5 and "5", or 1 and true, are different to RabbitMQ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def compare(defs: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    want_ex, want_q, want_b = expected_topology()

    def in_vhost(kind: str) -> list[dict[str, Any]]:
        items = defs.get(kind, [])
        if not isinstance(items, list):
            problems.append(f"{kind}: must be a list")
            return []
        return [i for i in items if isinstance(i, dict) and i.get("vhost") == VHOST]

    # exchanges
    have_ex = {e.get("name"): e for e in in_vhost("exchanges")}
    for name, want in want_ex.items():
        got = have_ex.get(name)
        if got is None:
            problems.append(f"exchange {name!r}: missing")
            continue
        for key, value in want.items():
            if not same(got.get(key, {} if key == "arguments" else None), value):
                problems.append(
                    f"exchange {name!r}: {key} is {got.get(key)!r}, the agents declare {value!r}"
                )
    for extra in sorted(have_ex.keys() - want_ex.keys(), key=str):
        problems.append(
            f"exchange {extra!r}: not declared by robeing (remove it or add it to the code)"
        )

    # queues
    have_q = {q.get("name"): q for q in in_vhost("queues")}
    for name, want in want_q.items():
        got = have_q.get(name)
        if got is None:
            problems.append(f"queue {name!r}: missing")
            continue
        for key in ("durable", "auto_delete"):
            if not same(got.get(key), want[key]):
                problems.append(
                    f"queue {name!r}: {key} is {got.get(key)!r}, the agents declare {want[key]!r}"
                )
        got_args = got.get("arguments") or {}
        for arg in sorted(got_args.keys() | want["arguments"].keys()):
            g, w = got_args.get(arg, "<absent>"), want["arguments"].get(arg, "<absent>")
            if not same(g, w):
                problems.append(
                    f"queue {name!r}: argument {arg} is {g!r}, the agents declare {w!r}"
                )
    for extra in sorted(have_q.keys() - want_q.keys(), key=str):
        problems.append(
            f"queue {extra!r}: not declared by robeing (remove it or add it to the code)"
        )

    # bindings
    have_b: set[tuple] = set()
    for b in in_vhost("bindings"):
        if b.get("arguments"):
            problems.append(
                f"binding {b.get('source')!r} -> {b.get('destination')!r}: has arguments"
            )
        have_b.add(
            (b.get("source"), b.get("destination"), b.get("destination_type"), b.get("routing_key"))
        )
    for src, dst, kind, key in sorted(want_b - have_b):
        problems.append(f"binding {src!r} -> {kind} {dst!r} (key {key!r}): missing")
    for src, dst, kind, key in sorted(have_b - want_b, key=str):
        problems.append(f"binding {src!r} -> {kind} {dst!r} (key {key!r}): not declared by robeing")

    # self-consistency
    vhosts = {v.get("name") for v in defs.get("vhosts", []) if isinstance(v, dict)}
    if VHOST not in vhosts:
        problems.append(
            f"vhost {VHOST!r}: missing (it is not created when definitions load at boot)"
        )
    for kind in ("exchanges", "queues", "bindings", "policies", "permissions"):
        for item in defs.get(kind, []) or []:
            if isinstance(item, dict) and item.get("vhost") not in vhosts:
                what = item.get("name") or item.get("user") or item
                problems.append(f"{kind}: {what!r} uses undefined vhost {item.get('vhost')!r}")
    users = {u.get("name"): u for u in defs.get("users", []) if isinstance(u, dict)}
    for user_name, user in users.items():
        if not (user.get("password_hash") or user.get("password")):
            problems.append(f"user {user_name!r}: no password_hash")
    perms = [p for p in defs.get("permissions", []) if isinstance(p, dict)]
    for p in perms:
        if p.get("user") not in users:
            problems.append(f"permission for undefined user {p.get('user')!r}")
    if not any(
        p.get("vhost") == VHOST and all(p.get(k) == ".*" for k in ("configure", "write", "read"))
        for p in perms
    ):
        problems.append(f"no user has configure/write/read '.*' on vhost {VHOST!r}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    try:
        defs = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        die(f"cannot read {args.file}: {exc}")
    if not isinstance(defs, dict):
        die(f"{args.file}: not a JSON object")
    problems = compare(defs)
    if problems:
        for p in problems:
            print(f"MISMATCH {p}", file=sys.stderr)
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
        sys.exit(1)
    n = {k: len(defs.get(k, [])) for k in ("exchanges", "queues", "bindings")}
    print(
        f"{args.file}: ok — {n['exchanges']} exchanges, {n['queues']} queues and "
        f"{n['bindings']} bindings match robeing.broker.topology"
    )


if __name__ == "__main__":
    main()
