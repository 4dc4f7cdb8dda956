"""`celery -A sms_pipeline.celery_app`: the public path of the app in broker/app.py."""

from sms_pipeline.broker.app import app

__all__ = ["app"]
