"""The broker side: the Celery app (`app`), the dispatch port (the only publisher) and the
transports (embedded filesystem, Redis with Sentinel, RabbitMQ's consumer), with the shared
Redis of rate limits and kick flags (`redis_store`).

`sms_pipeline.celery_app` re-exports `app` for `celery -A sms_pipeline.celery_app`.
"""
