"""``calsync serve``: the HTTP front door (platform API, connect pages, health, metrics)."""

from __future__ import annotations

import logging

import click

from sync.cli.usage import OneLineCommand


@click.command(cls=OneLineCommand)
@click.option("--host", help="Address to bind (default CALSYNC_HTTP_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65_535), help="Port (default CALSYNC_HTTP_PORT, 8765).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the platform API, the connect pages, /healthz, /readyz and /metrics over HTTP."""
    import uvicorn

    from sync.config import get_settings
    from sync.engine.jsonlog import JsonFormatter
    from sync.http.app import create_app

    settings = get_settings()
    if not settings.api_tokens:
        click.echo("warning: CALSYNC_API_TOKENS is not set: every /v1 call will be refused (401)", err=True)
    # JSON lines on stderr, access lines included (sync.http.access: route, status, time; never a token or body).
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    uvicorn.run(create_app(), host=host or settings.http_host, port=port or settings.http_port,
                access_log=False, log_config=None, server_header=False, proxy_headers=False)
