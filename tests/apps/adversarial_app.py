"""Handlers the adversarial suite loads with ``--app apps.adversarial_app``.

The sample app's tasks (``add``, ``sleepy``…), plus ``blob``: a result of a
chosen size, to build results (and dependency inputs) over a message's limit.
"""

from __future__ import annotations

from apps.sample_app import app

from robeing.agents.app import TaskContext

__all__ = ["app"]


@app.task("blob", specialization="math")
def blob(ctx: TaskContext) -> str:
    """payload {"size": n}: a string of n characters."""
    return "x" * int(ctx.payload["size"])
