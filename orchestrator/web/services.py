"""What a request needs, built once per process: the leaf module both the application factory (app.py)
and the views (api.py) import, so neither imports the other (the Flask tutorial's db.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from orchestrator.pipeline import Pipeline
from orchestrator.predict.client import PredictClient
from orchestrator.predict.routing import VersionRouter
from orchestrator.settings import Settings
from orchestrator.web.ratelimit import RateLimiter
from orchestrator.web.workqueue import WorkQueue

EXTENSION = "shine"


@dataclass
class Services:
    """Everything a request needs, built once per process by create_app."""

    settings: Settings
    pipeline: Pipeline
    client: PredictClient
    router: VersionRouter
    limiter: RateLimiter
    openapi: dict[str, Any]
    # Admission of analyses in this worker (one per process: gunicorn forks the preloaded app).
    workqueue: WorkQueue


def init_app(app: Flask, services: Services) -> None:
    """Keep `services` in the app for its requests."""
    app.extensions[EXTENSION] = services


def get_services() -> Services:
    """The services of the app handling the current request."""
    services: Services = current_app.extensions[EXTENSION]
    return services
