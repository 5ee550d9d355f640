"""The Celery side of ``bench_tasks.py``: one app, one task, the same work as robeing's.

Workers start with ``celery -A celery_app worker`` from this directory; the
broker URL (a vhost of its own) comes from ``BENCH_CELERY_BROKER``. Settings:
results over ``rpc://`` (replies to the caller's queue, like robeing's final
results), late acknowledgement (a task is acknowledged after it ran, like
robeing's assignments), msgpack for tasks and results, the default prefetch
multiplier.

With ``BENCH_CELERY_DURABLE=1`` Celery keeps robeing's promise that an
accepted task survives a broker failure (DESIGN §4): the task queue is a
quorum queue (replicated, durable) and every publish waits for the broker's
confirm (``confirm_publish``). The client and the workers of one system must
agree on it, which they do through the same variable.
"""

from __future__ import annotations

import hashlib
import os

from celery import Celery
from kombu import Exchange, Queue

DURABLE = os.environ.get("BENCH_CELERY_DURABLE", "") == "1"

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
if DURABLE:
    app.conf.update(
        task_queues=[
            Queue(
                "celery",
                Exchange("celery", type="direct"),
                routing_key="celery",
                queue_arguments={"x-queue-type": "quorum"},
            )
        ],
        broker_transport_options={"confirm_publish": True},
    )


@app.task(name="bench.sha256")
def sha256(data: str) -> str:
    """SHA-256 hex digest of text (UTF-8), as robeing's built-in ``sha256`` task."""
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()
