"""Which event loop a robeing process runs on: uvloop when it is there, else asyncio's.

``ROBEING_LOOP`` (the CLI's ``--loop``) chooses:

* ``auto`` (default): uvloop if it can be imported (``pip install robeing[fast]``,
  and the Docker image), asyncio's own loop otherwise;
* ``uvloop``: uvloop, and a :class:`~robeing.protocol.errors.ConfigError` if it is
  not installed (asking for it by name and silently not getting it would make
  a benchmark lie);
* ``asyncio``: asyncio's own loop, even where uvloop is installed.

uvloop changes no behaviour robeing relies on, only speed: measured on the
benchmark machine, +14 % tasks/s for the same fleet (see the README's Speed
section). Every CLI verb runs its coroutine through :func:`run`, so agents,
``submit`` and the rest all use the same choice.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..protocol.errors import ConfigError

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` names (None: asyncio's default).

    Raises:
        ConfigError: an unknown choice, or ``uvloop`` when it is not installed.
    """
    if choice not in CHOICES:
        raise ConfigError(f"ROBEING_LOOP must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "ROBEING_LOOP=uvloop but uvloop is not installed "
                "(pip install 'robeing[fast]', or ROBEING_LOOP=asyncio)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """Run ``main`` to completion on a fresh loop of the kind ``choice`` names.

    Like :func:`asyncio.run` (the loop is closed, async generators and the
    default executor shut down afterwards), with the loop chosen here.

    Raises:
        ConfigError: see :func:`loop_factory` (``main`` is closed unrun).
    """
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never awaited: say nothing more than the one-line error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``"uvloop"`` or ``"asyncio"``: which kind ``loop`` (default: the running one) is."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
