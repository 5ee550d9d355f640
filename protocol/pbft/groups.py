"""PBFT groups: which agents form one, and how it is written down.

A *group* is a named set of ``n >= 3f + 1`` agent ids (:class:`GroupSpec`),
written ``NAME=ID,ID,...[/F]`` on the command line and in
``ROBEING_BFT_GROUP`` (:func:`parse_groups`); the primary of view ``v`` is
``members[v % n]``. This is pure data and validation: the settings hold
groups, the replicas host them, and a client commits through them.

Invariants:
    * A group with ``n < 3f + 1`` members cannot be built; without an
      explicit ``f`` a group must tolerate at least one fault (``n >= 4``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def group_key(name: str) -> str:
    """Routing key on ``robeing.direct`` that reaches every member's inbox.

    ``/`` cannot occur in agent ids, so it never collides with an agent's own key.
    """
    return f"bft/{name}"


@dataclass(frozen=True)
class GroupSpec:
    """A named PBFT group.

    Attributes:
        name: group name (letters, digits, ``_.-``).
        members: agent ids; their order defines the primaries.
        f: Byzantine members tolerated.
        view_change_timeout: initial time a backup waits for a pending request.
        checkpoint_interval: checkpoint every this many sequence numbers.
        status_interval: period of the retransmission status messages.

    Raises:
        ConfigError: bad name, duplicate members, ``n < 3f + 1`` or
            non-positive timings.
    """

    name: str
    members: tuple[str, ...]
    f: int
    view_change_timeout: float = 2.0
    checkpoint_interval: int = 16
    status_interval: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        n = len(self.members)
        if not _NAME.match(self.name):
            raise ConfigError(f"invalid BFT group name {self.name!r}")
        if len(set(self.members)) != n:
            raise ConfigError(f"BFT group {self.name!r} lists a member twice")
        if self.f < 0:
            raise ConfigError(f"BFT group {self.name!r}: f must be >= 0")
        if n < 3 * self.f + 1:
            raise ConfigError(
                f"BFT group {self.name!r} has n={n} members, but tolerating f={self.f} "
                f"Byzantine agents needs n >= 3f + 1 = {3 * self.f + 1}"
            )
        if self.view_change_timeout <= 0 or self.status_interval <= 0:
            raise ConfigError("BFT timeouts must be positive")
        if self.checkpoint_interval < 1:
            raise ConfigError("the checkpoint interval must be at least 1")

    @classmethod
    def build(cls, name: str, members: Iterable[str], f: int | None = None, **kw: Any) -> GroupSpec:
        """A group tolerating ``f`` faults (default: the most ``n`` allows, at least one).

        Raises:
            ConfigError: as the class, or fewer than 4 members without an explicit ``f``.
        """
        ids = tuple(members)
        if f is None:
            f = (len(ids) - 1) // 3
            if f < 1:
                raise ConfigError(
                    f"BFT group {name!r} has n={len(ids)} members, but tolerating one "
                    "Byzantine agent needs n >= 3f + 1 = 4"
                )
        return cls(name, ids, f, **kw)

    def __str__(self) -> str:
        return f"{self.name}={','.join(self.members)}/{self.f}"


def parse_groups(text: str | None, **kw: Any) -> tuple[GroupSpec, ...]:
    """Parse ``NAME=ID,ID,...[/F]`` group specs separated by ``;`` or whitespace.

    Example: ``"orders=a,b,c,d;big=a,b,c,d,e,f,g/2"``.

    Raises:
        ConfigError: malformed spec, duplicate names, or an invalid group.
    """
    specs: list[GroupSpec] = []
    for part in re.split(r"[;\s]+", (text or "").strip()):
        if not part:
            continue
        name, eq, rest = part.partition("=")
        ids, slash, f_text = rest.partition("/")
        if not eq or not ids:
            raise ConfigError(f"invalid BFT group {part!r}: expected NAME=ID,ID,...[/F]")
        try:
            f = int(f_text) if slash else None
        except ValueError:
            raise ConfigError(f"invalid BFT group {part!r}: F must be an integer") from None
        specs.append(GroupSpec.build(name, (m for m in ids.split(",") if m), f, **kw))
    if len({s.name for s in specs}) != len(specs):
        raise ConfigError("a BFT group name is defined twice")
    return tuple(specs)
