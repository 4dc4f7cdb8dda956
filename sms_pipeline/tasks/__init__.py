"""Thin Celery tasks: load ids, call a service, decide retry or not."""
