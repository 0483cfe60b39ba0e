"""The WSGI entry point gunicorn serves: `gunicorn -c configs/gunicorn.conf.py orchestrator.wsgi:app`."""

from __future__ import annotations

from orchestrator.web.app import create_app

app = create_app()
