"""The heartbeat: what an agent says about itself every ``heartbeat_interval``.

An agent publishes it in a signed envelope of type ``heartbeat`` on
``heartbeat.<role>.<id>``; the coordinator schedules and detects failures
from it, and ``robeing status`` shows it. Receivers trust the role in the
sender's certificate, not the one claimed here.

The wire form is a flat map: the known fields, then one top-level key per
role section (``coordinator``, ``guardian``, ``consensus``: each a map), so
a reader that knows no section still reads the rest. Unknown keys whose
value is a map come back as :attr:`Heartbeat.extras`; other unknown keys are
ignored, so a newer agent may add fields.

What an agent can do: ``specializations`` (skills), ``proficiency`` (a
skill's claimed level in ``[0, 1]``; a skill without one counts fully) and
``tasks`` (the task types it has handlers for; absent — ``None`` — from an
agent that predates the field, which the coordinator takes as "any"). Both
new fields go on the wire only when set, so a heartbeat without them reads
and writes the same bytes as before.

Invariants:
    * ``Heartbeat.from_data(hb.to_data()) == hb`` for every valid heartbeat,
      and :meth:`Heartbeat.from_data` raises nothing but
      :class:`~robeing.protocol.errors.DecodeError`.
    * Bounded: at most :data:`MAX_SPECIALIZATIONS` specializations and
      :data:`MAX_EXTRAS` sections, at most :data:`MAX_TASK_TYPES` task types,
      a proficiency only for an announced skill and within ``[0, 1]``,
      strings of at most :data:`MAX_TEXT` characters, ``load >= 0``,
      ``capacity >= 1``, a finite ``started_at``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DecodeError
from .fields import count, ensure, finite, mapping, need, strings, text
from .resources import InvalidResources, Resources

__all__ = [
    "MAX_EXTRAS",
    "MAX_SPECIALIZATIONS",
    "MAX_TASK_TYPES",
    "MAX_TEXT",
    "STATES",
    "Heartbeat",
]

STATES = ("starting", "alive", "standby", "stopping", "leaving")
MAX_TEXT = 128
MAX_SPECIALIZATIONS = 64
MAX_EXTRAS = 16
MAX_TASK_TYPES = 256


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat.

    Attributes:
        role: the role the agent claims (receivers use its certificate's).
        state: one of :data:`STATES`.
        specializations: skills the agent offers.
        cluster_id: the cluster it belongs to.
        priority: its role's priority, 1 (most important) to 9.
        standby: a backup that takes work only when needed.
        backup_for: the one agent it backs up, if any.
        resources: what it contributes to the resource pool (None: nothing;
            an all-zero value becomes None, so "nothing" has one form).
        load: executions in flight.
        capacity: executions it runs at once (at least 1).
        started_at: when the process started (epoch seconds).
        incarnation: id of this process's connection (tells restarts apart).
        stats: its message counters.
        extras: role sections by name, each a map.
        tasks: the task types it has handlers for (None: not announced).
        proficiency: claimed level per skill in ``[0, 1]`` (absent: 1).

    Raises:
        ValueError: a section of ``extras`` is not a map, or reuses a field's
            name (on the flat wire form it would overwrite that field); a
            proficiency is outside ``[0, 1]`` or for a skill not offered.
    """

    role: str
    state: str
    specializations: tuple[str, ...] = ()
    cluster_id: str = "default"
    priority: int = 3
    standby: bool = False
    backup_for: str | None = None
    resources: Resources | None = None
    load: int = 0
    capacity: int = 1
    started_at: float = 0.0
    incarnation: str = ""
    stats: Mapping[str, Any] = field(default_factory=dict, hash=False)
    extras: Mapping[str, Any] = field(default_factory=dict, hash=False)
    tasks: tuple[str, ...] | None = None
    proficiency: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "specializations", tuple(self.specializations))
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        bad = sorted(
            k
            for k, v in self.proficiency.items()
            if k not in self.specializations or not 0.0 <= v <= 1.0
        )
        if bad:
            raise ValueError(f"proficiency must be in [0, 1] for an offered skill: {bad}")
        if self.resources is not None and self.resources.is_zero():
            object.__setattr__(self, "resources", None)
        clash = sorted(_FIELDS.intersection(self.extras))
        if clash:
            raise ValueError(f"heartbeat sections may not be named like fields: {clash}")
        not_maps = sorted(k for k, v in self.extras.items() if not isinstance(v, Mapping))
        if not_maps:
            raise ValueError(f"heartbeat sections must be maps: {not_maps}")

    def to_data(self) -> dict[str, Any]:
        """The wire form: a flat map, sections as top-level keys.

        Raises:
            Nothing.
        """
        # Key order as agents have always sent it: the description, then the live state.
        data: dict[str, Any] = {
            "role": self.role,
            "specializations": list(self.specializations),
            "cluster_id": self.cluster_id,
            "priority": self.priority,
            "standby": self.standby,
            "backup_for": self.backup_for,
            "resources": {} if self.resources is None else self.resources.to_mapping(),
            "state": self.state,
            "load": self.load,
            "capacity": self.capacity,
            "started_at": self.started_at,
            "incarnation": self.incarnation,
            "stats": dict(self.stats),
            **{name: dict(section) for name, section in self.extras.items()},
        }
        if self.tasks is not None:
            data["tasks"] = list(self.tasks)
        if self.proficiency:
            data["proficiency"] = dict(self.proficiency)
        return data

    @classmethod
    def from_data(cls, data: Any) -> Heartbeat:
        """Read and validate a heartbeat payload from the wire.

        Raises:
            DecodeError: not a map, ``role`` or ``state`` missing, or a known
                field invalid (type, range, length, unknown state, invalid
                resources), or more than :data:`MAX_EXTRAS` sections.
        """
        d = mapping(data, "heartbeat")
        state = need(d, "state", str)
        ensure(state in STATES, f"unknown heartbeat state {state!r:.40}")
        backup_for = d.get("backup_for")
        try:
            resources = Resources.from_mapping(need(d, "resources", dict, {}))
        except InvalidResources as exc:
            raise DecodeError(f"field 'resources': {exc}") from None
        extras = {
            text(k, "section", MAX_TEXT): v
            for k, v in d.items()
            if isinstance(k, str) and k not in _FIELDS and isinstance(v, dict)
        }
        ensure(len(extras) <= MAX_EXTRAS, f"a heartbeat holds at most {MAX_EXTRAS} sections")
        skills = strings(
            d.get("specializations", []),
            "specializations",
            max_items=MAX_SPECIALIZATIONS,
            max_len=MAX_TEXT,
        )
        raw_tasks = d.get("tasks")
        tasks = (
            None
            if raw_tasks is None
            else strings(raw_tasks, "tasks", max_items=MAX_TASK_TYPES, max_len=MAX_TEXT)
        )
        levels = need(d, "proficiency", dict, {})
        ensure(len(levels) <= MAX_SPECIALIZATIONS, "too many proficiencies")
        proficiency = {}
        for skill, level in levels.items():
            ensure(isinstance(skill, str) and skill in skills, "proficiency of a skill not offered")
            value = finite(level, "proficiency")
            ensure(0.0 <= value <= 1.0, "field 'proficiency' must be in [0, 1]")
            proficiency[skill] = value
        return cls(
            role=text(need(d, "role", str), "role", MAX_TEXT),
            state=state,
            specializations=skills,
            cluster_id=text(d.get("cluster_id", "default"), "cluster_id", MAX_TEXT),
            priority=count(d.get("priority", 3), "priority", low=1, high=9),
            standby=need(d, "standby", bool, False),
            backup_for=None if backup_for is None else text(backup_for, "backup_for", MAX_TEXT),
            resources=resources,
            load=count(d.get("load", 0), "load"),
            capacity=count(d.get("capacity", 1), "capacity", low=1),
            started_at=finite(d.get("started_at", 0.0), "started_at"),
            incarnation=text(d.get("incarnation", ""), "incarnation", MAX_TEXT),
            stats=need(d, "stats", dict, {}),
            extras=extras,
            tasks=tasks,
            proficiency=proficiency,
        )


_FIELDS = frozenset(f.name for f in dataclasses.fields(Heartbeat)) - {"extras"}
"""The known keys of the wire form."""
