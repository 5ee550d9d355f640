"""Specification of the heartbeat message and its wire form."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_values import JUNK, PAYLOADS

from robeing.protocol.errors import DecodeError
from robeing.protocol.heartbeat import (
    MAX_EXTRAS,
    MAX_SPECIALIZATIONS,
    MAX_TASK_TYPES,
    MAX_TEXT,
    STATES,
    Heartbeat,
)
from robeing.protocol.resources import Resources

# What an agent sent before the heartbeat had a type (keys in the order it used).
TODAYS_WIRE: dict[str, Any] = {
    "role": "worker",
    "specializations": ["data_processing", "nlp"],
    "cluster_id": "default",
    "priority": 3,
    "standby": False,
    "backup_for": None,
    "resources": {"cpu": 2.5, "memory": 2**30},
    "state": "alive",
    "load": 2,
    "capacity": 4,
    "started_at": 1700000000.25,
    "incarnation": "0a1b2c3d",
    "stats": {"received": 10, "handled": 9, "failed": 1, "duplicates": 0, "rejected": {}},
    "consensus": {"evidence": 0, "offenders": [], "bft": {}},
    "guardian": {"dead_letters": 3, "by_reason": {"decode": 3}},
}


def packed(data: Any) -> bytes:
    return msgpack.packb(data, use_bin_type=True)


def test_todays_heartbeat_decodes_and_encodes_to_the_same_bytes() -> None:
    """Given the payload agents send today, When decoded and encoded again,
    Expect the very same msgpack bytes, and the sections as extras."""
    hb = Heartbeat.from_data(msgpack.unpackb(packed(TODAYS_WIRE)))

    assert packed(hb.to_data()) == packed(TODAYS_WIRE)
    assert hb.resources == Resources(cpu=2.5, memory=2**30)
    assert hb.specializations == ("data_processing", "nlp")
    assert set(hb.extras) == {"consensus", "guardian"}


def test_absent_fields_take_their_defaults() -> None:
    hb = Heartbeat.from_data({"role": "worker", "state": "starting"})

    assert hb == Heartbeat("worker", "starting")
    assert (hb.cluster_id, hb.priority, hb.capacity, hb.resources) == ("default", 3, 1, None)


def test_unknown_map_keys_are_sections_and_other_unknown_keys_are_ignored() -> None:
    hb = Heartbeat.from_data(
        {"role": "worker", "state": "alive", "future": {"x": 1}, "version": 2, 7: {"k": 1}}
    )

    assert hb.extras == {"future": {"x": 1}}


def test_zero_resources_are_no_resources_and_go_out_as_an_empty_map() -> None:
    hb = Heartbeat("worker", "alive", resources=Resources())

    assert hb.resources is None
    assert hb.to_data()["resources"] == {}


def test_a_section_named_like_a_field_or_not_a_map_is_refused_at_construction() -> None:
    """Expect ValueError: on the flat wire form such a section would overwrite a
    field, or come back as no section at all."""
    with pytest.raises(ValueError, match="load"):
        Heartbeat("worker", "alive", extras={"load": {}})
    with pytest.raises(ValueError, match="maps"):
        Heartbeat("worker", "alive", extras={"guardian": 3})


@pytest.mark.parametrize(
    "change, field",
    [
        ({"state": "dead"}, "state"),
        ({"state": None}, "state"),
        ({"role": None}, "role"),
        ({"role": "r" * (MAX_TEXT + 1)}, "role"),
        ({"load": -1}, "load"),
        ({"load": True}, "load"),
        ({"load": 1.5}, "load"),
        ({"capacity": 0}, "capacity"),
        ({"priority": 0}, "priority"),
        ({"priority": 10}, "priority"),
        ({"started_at": math.nan}, "started_at"),
        ({"started_at": math.inf}, "started_at"),
        ({"started_at": "now"}, "started_at"),
        ({"resources": {"cpu": -1}}, "resources"),
        ({"resources": {"gpu": 1}}, "resources"),
        ({"resources": [1]}, "resources"),
        ({"specializations": ["s"] * (MAX_SPECIALIZATIONS + 1)}, "specializations"),
        ({"specializations": ["s" * (MAX_TEXT + 1)]}, "specializations"),
        ({"specializations": "nlp"}, "specializations"),
        ({"cluster_id": 5}, "cluster_id"),
        ({"backup_for": 5}, "backup_for"),
        ({"incarnation": b"raw"}, "incarnation"),
        ({"standby": "yes"}, "standby"),
        ({"stats": [1, 2]}, "stats"),
        ({f"s{i}": {} for i in range(MAX_EXTRAS + 1)}, "sections"),
        ({"x" * (MAX_TEXT + 1): {}}, "section"),
        ({"tasks": "sort"}, "tasks"),
        ({"tasks": ["t"] * (MAX_TASK_TYPES + 1)}, "tasks"),
        ({"tasks": ["t" * (MAX_TEXT + 1)]}, "tasks"),
        ({"tasks": [3]}, "tasks"),
        ({"proficiency": [0.5]}, "proficiency"),
        ({"proficiency": {"nlp": 1.5}}, "proficiency"),
        ({"proficiency": {"nlp": -0.1}}, "proficiency"),
        ({"proficiency": {"nlp": math.nan}}, "proficiency"),
        ({"proficiency": {"nlp": True}}, "proficiency"),
        ({"proficiency": {"cooking": 0.5}}, "proficiency"),
    ],
)
def test_an_invalid_known_field_is_a_decode_error_naming_it(
    change: dict[str, Any], field: str
) -> None:
    """Given today's heartbeat with one field made invalid (type, range, length,
    state, resources) or too many sections, Expect DecodeError naming it."""
    with pytest.raises(DecodeError, match=field):
        Heartbeat.from_data({**TODAYS_WIRE, **change})


def test_task_types_and_proficiency_travel_only_when_announced() -> None:
    """Given a heartbeat announcing its task types and a skill's proficiency,
    Expect both back from the wire; given one without, Expect neither key on
    the wire and ``tasks`` None (an older agent: the coordinator reads "any")."""
    hb = Heartbeat.from_data(
        {**TODAYS_WIRE, "tasks": ["sort", "describe"], "proficiency": {"nlp": 0.9}}
    )

    assert hb.tasks == ("sort", "describe")
    assert hb.proficiency == {"nlp": 0.9}
    assert Heartbeat.from_data(TODAYS_WIRE).tasks is None
    assert "tasks" not in Heartbeat("worker", "alive").to_data()
    assert Heartbeat("worker", "alive", tasks=()).to_data()["tasks"] == []


def test_a_proficiency_out_of_range_or_for_another_skill_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="proficiency"):
        Heartbeat("worker", "alive", specializations=("a",), proficiency={"a": 2.0})
    with pytest.raises(ValueError, match="proficiency"):
        Heartbeat("worker", "alive", specializations=("a",), proficiency={"b": 0.5})


def test_a_payload_that_is_no_map_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="heartbeat"):
        Heartbeat.from_data([TODAYS_WIRE])


NAMES = st.text(max_size=MAX_TEXT)
SECTIONS = st.dictionaries(st.text(max_size=8), PAYLOADS, max_size=3)
heartbeats = st.builds(
    Heartbeat,
    role=NAMES,
    state=st.sampled_from(STATES),
    specializations=st.lists(NAMES, max_size=MAX_SPECIALIZATIONS).map(tuple),
    cluster_id=NAMES,
    priority=st.integers(1, 9),
    standby=st.booleans(),
    backup_for=st.none() | NAMES,
    resources=st.none()
    | st.builds(
        Resources,
        cpu=st.floats(0, 1e6) | st.integers(0, 10**6),
        memory=st.integers(0, 2**62),
        storage=st.integers(0, 2**62),
        bandwidth=st.integers(0, 2**40),
    ),
    load=st.integers(0, 2**64 - 1),
    capacity=st.integers(1, 2**63 - 1),
    started_at=st.floats(allow_nan=False, allow_infinity=False),
    incarnation=NAMES,
    stats=SECTIONS,
    extras=st.dictionaries(
        st.text(max_size=MAX_TEXT).filter(lambda k: k not in Heartbeat.__dataclass_fields__),
        SECTIONS,
        max_size=MAX_EXTRAS,
    ),
    tasks=st.none() | st.lists(NAMES, max_size=MAX_TASK_TYPES).map(tuple),
).flatmap(
    lambda hb: st.dictionaries(
        st.sampled_from(hb.specializations) if hb.specializations else st.nothing(),
        st.floats(0.0, 1.0),
        max_size=len(hb.specializations),
    ).map(lambda levels: dataclasses.replace(hb, proficiency=levels))
)


@settings(max_examples=300, deadline=None)
@given(heartbeats)
def test_every_valid_heartbeat_round_trips(hb: Heartbeat) -> None:
    """Given any valid heartbeat, Expect from_data(to_data()) to give it back,
    directly and through msgpack."""
    assert Heartbeat.from_data(hb.to_data()) == hb
    assert Heartbeat.from_data(msgpack.unpackb(packed(hb.to_data()))) == hb


KEYS = st.sampled_from([*Heartbeat.__dataclass_fields__, "coordinator"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(JUNK, st.dictionaries(KEYS, JUNK, max_size=14)))
def test_junk_raises_only_decode_error(data: Any) -> None:
    """Given any decoded msgpack, including maps with the right keys and wrong
    values, Expect a heartbeat or DecodeError, never another exception."""
    with contextlib.suppress(DecodeError):
        Heartbeat.from_data(data)
