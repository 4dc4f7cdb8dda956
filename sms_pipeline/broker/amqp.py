"""The worker's consumer on RabbitMQ, without Celery's native delayed delivery.

With quorum queues Celery (5.5+) adds a consumer step that declares 28 delayed-delivery
exchanges and queues and binds every task queue to them, for ETA/countdown messages. This
pipeline publishes none on RabbitMQ (`Settings.broker_holds_countdowns`: waits live in the
row's `due_at`, the outbox sweeper kicks them), so the step would only declare unused
queues and warn at every (re)connection that our direct exchanges cannot take delays.
broker/app.py names this consumer (`worker_consumer`) when the broker is amqp://.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

_DELAYED_DELIVERY = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):  # type: ignore[misc]
    class Blueprint(CeleryConsumer.Blueprint):  # type: ignore[misc]
        default_steps = [
            s for s in CeleryConsumer.Blueprint.default_steps if s != _DELAYED_DELIVERY
        ]
