"""The demo page at /demo (and / redirecting there): plain HTML, CSS and JS from web/static/, calling
the guest API from the same origin.

The API keeps its strict headers (default-src 'none'); the page gets a policy of its own that lets it
load only its own scripts, styles and images (data: for the overlay) and talk only to this origin.
"""

from __future__ import annotations

from flask import Blueprint, Response, redirect, url_for
from werkzeug.wrappers import Response as Redirect

demo = Blueprint("demo", __name__, static_folder="static", static_url_path="/demo/static")

DEMO_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)


@demo.get("/")
def index() -> Redirect:
    return redirect(url_for("demo.page"), code=302)


@demo.get("/demo")
def page() -> Response:
    response = demo.send_static_file("demo.html")
    response.headers["Content-Security-Policy"] = DEMO_CSP
    return response
