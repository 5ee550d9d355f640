"""Cluster names: the default cluster, and what a name may look like.

A cluster name becomes part of queue names and routing keys
(``robeing.cluster.<name>.lock``, ``heartbeat.<name>.<role>.<id>``), so it
holds no dot (a routing-key separator) and no wildcard. ``default`` is the
cluster the coordinator itself leads; every agent is in it unless it says
otherwise (``CLUSTER_ID``) or a cluster definition moved it.
"""

from __future__ import annotations

import re

from ..errors import ConfigError

__all__ = ["DEFAULT_CLUSTER", "MAX_CLUSTER_NAME", "check_cluster_name", "cluster_name_problem"]

DEFAULT_CLUSTER = "default"
MAX_CLUSTER_NAME = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def cluster_name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as a cluster name (None: nothing)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        return (
            f"invalid cluster name {name!r:.80}: 1 to {MAX_CLUSTER_NAME} letters, digits, "
            "'_' or '-', starting with a letter or digit"
        )
    return None


def check_cluster_name(name: object) -> str:
    """Return ``name`` if it is a valid cluster name.

    Raises:
        ConfigError: it is not (the message says what a name may hold).
    """
    problem = cluster_name_problem(name)
    if problem is not None:
        raise ConfigError(problem)
    assert isinstance(name, str)
    return name
