"""robeing's broker layer: RabbitMQ and nothing else.

Agents use the :class:`Transport` interface; :class:`AmqpTransport` is the
aio-pika implementation; :mod:`.topology` names and declares everything.
"""

from .amqp import AmqpTransport
from .base import Consumer, Delivery, Transport
from .management import Management, ManagementSettings

__all__ = ["AmqpTransport", "Consumer", "Delivery", "Management", "ManagementSettings", "Transport"]
