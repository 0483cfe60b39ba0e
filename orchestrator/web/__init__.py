"""The HTTP layer: application factory, views, OpenAPI document, rate limits and metrics."""
