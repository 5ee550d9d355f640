# TEMPORARY STUB (not committed): replaced by the real module on merge.
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DecodeError
from .resources import InvalidResources, Resources

_KNOWN = ("role","state","specializations","cluster_id","priority","standby","backup_for","resources","load","capacity","started_at","incarnation","stats")

@dataclass(frozen=True, slots=True)
class Heartbeat:
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
    stats: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _KNOWN}
        d["specializations"] = list(self.specializations)
        d["resources"] = self.resources.to_mapping() if self.resources else {}
        d["stats"] = dict(self.stats)
        d.update(self.extras)
        return d

    @staticmethod
    def from_data(data: Any) -> Heartbeat:
        if not isinstance(data, dict):
            raise DecodeError("heartbeat must be a map")
        try:
            res = Resources.from_mapping(data.get("resources") or {})
        except InvalidResources as exc:
            raise DecodeError(str(exc)) from None
        return Heartbeat(
            role=str(data.get("role","")), state=str(data.get("state","alive")),
            specializations=tuple(str(s) for s in data.get("specializations", [])),
            cluster_id=str(data.get("cluster_id","default")), priority=int(data.get("priority",3)),
            standby=bool(data.get("standby")), backup_for=data.get("backup_for"),
            resources=None if res.is_zero() else res, load=int(data.get("load",0)),
            capacity=int(data.get("capacity",1)), started_at=float(data.get("started_at",0.0)),
            incarnation=str(data.get("incarnation","")), stats=dict(data.get("stats",{})),
            extras={k: v for k, v in data.items() if k not in _KNOWN and isinstance(v, dict)},
        )
