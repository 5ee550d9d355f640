"""Messenger: communication, data transfer, protocol handling and format conversion.

* :mod:`.convert` — ``messenger.convert`` requests between JSON, msgpack and CSV;
* :mod:`.transfer` — chunked transfers of any size (every agent receives them;
  ``robeing send --file``);
* :mod:`.blobs` — task inputs of any size, held by a messenger and fetched by
  the agent that runs the task (:func:`fetch_blob`);
* :mod:`.relay` — store-and-forward for agents that are away (``robeing send --via``);
* :mod:`.gateway` — an HTTP/JSON gateway for clients that do not speak robeing
  (``robeing agent --role messenger --http HOST:PORT``).
"""

from __future__ import annotations

from typing import Any

from ...context import AgentContext
from .blobs import accept_blobs, fetch_blob, hold_blobs
from .convert import handle_convert
from .gateway import install_gateway
from .relay import Relay, accept_relayed, install_relay
from .transfer import Receiver, receive_transfers, send_file

__all__ = [
    "Receiver",
    "Relay",
    "accept_blobs",
    "accept_relayed",
    "fetch_blob",
    "handle_convert",
    "install",
    "receive_transfers",
    "send_file",
]


def install(agent: AgentContext) -> Relay:
    """Give a messenger its handlers: conversion, relay, and the HTTP gateway if asked."""
    agent.handle("messenger.convert", handle_convert)
    relay = install_relay(agent)
    hold_blobs(agent)
    section: dict[str, Any] = {"relay": relay.report}
    if agent.settings.http:
        section["gateway"] = install_gateway(agent).report
    agent.add_heartbeat_extra(lambda: {"messenger": {k: f() for k, f in section.items()}})
    return relay
