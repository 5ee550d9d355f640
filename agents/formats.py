"""Data formats the messenger translates between: JSON, msgpack, CSV and records.

Conversion goes through *records* (plain values: for CSV a list of maps), so
every pair of formats works. Bad input is refused with a ``Reject`` that
names the problem. Used by the messenger's ``messenger.convert`` handler and
the built-in ``convert`` task.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import msgpack

from ..protocol.envelope import unpack
from ..protocol.errors import Reject

__all__ = ["FORMATS", "convert", "from_records", "to_records"]

FORMATS = ("json", "msgpack", "csv", "records")


def to_records(data: Any, fmt: str) -> Any:
    """Parse ``data`` in ``fmt`` into plain values.

    Raises:
        Reject: unknown format or data that does not parse.
    """
    try:
        if fmt == "records":
            return data
        if fmt == "json":
            return json.loads(data)
        if fmt == "msgpack":
            if not isinstance(data, bytes):
                raise Reject("msgpack data must be bytes")
            return unpack(data)
        if fmt == "csv":
            if not isinstance(data, str):
                raise Reject("csv data must be text")
            return list(csv.DictReader(io.StringIO(data)))
    except Reject:
        raise
    except Exception as exc:
        raise Reject(f"cannot parse {fmt}: {exc}") from exc
    raise Reject(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def from_records(value: Any, fmt: str) -> Any:
    """Render plain values as ``fmt``.

    Raises:
        Reject: unknown format, or values that ``fmt`` cannot hold (CSV
            needs a list of maps with scalar values).
    """
    if fmt == "records":
        return value
    try:
        if fmt == "json":
            return json.dumps(value, separators=(",", ":"), sort_keys=True)
        if fmt == "msgpack":
            return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise Reject(f"cannot write these values as {fmt}: {exc}") from exc
    if fmt == "csv":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise Reject("csv output needs a list of records (maps)")
        columns: list[str] = []
        for row in value:
            for key in row:
                if key not in columns:
                    columns.append(str(key))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in value:
            if any(isinstance(v, dict | list) for v in row.values()):
                raise Reject("csv cells must be scalars")
            writer.writerow(row)
        return out.getvalue()
    raise Reject(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def convert(data: Any, src: str, dst: str) -> Any:
    """Convert ``data`` from format ``src`` to ``dst``."""
    return from_records(to_records(data, src), dst)
