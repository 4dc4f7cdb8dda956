"""The HTTP API for producers in any language (`sms-pipeline api`)."""

from .app import create_app

__all__ = ["create_app"]
