"""The Celery side of ``bench_tasks.py``: one app, one task, the same work as robeing's.

Workers start with ``celery -A celery_app worker`` from this directory; the
broker URL (a vhost of its own) comes from ``BENCH_CELERY_BROKER``. Settings:
results over ``rpc://`` (replies to the caller's queue, like robeing's final
results), late acknowledgement (a task is acknowledged after it ran, like
robeing's assignments), msgpack for tasks and results, the default prefetch
multiplier.
"""

from __future__ import annotations

import hashlib
import os

from celery import Celery

app = Celery(
    "bench_tasks",
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.update(
    task_acks_late=True,
    task_serializer="msgpack",
    result_serializer="msgpack",
    accept_content=["msgpack"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.sha256")
def sha256(data: str) -> str:
    """SHA-256 hex digest of text (UTF-8), as robeing's built-in ``sha256`` task."""
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()
