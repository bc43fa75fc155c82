"""The ASGI app: routes, error shapes, the body limit, access logs and request metrics.

:func:`create_app` is the composition root of ``calsync serve``; tests build
one around their own runtime and serve it on a free port with uvicorn.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from sync.engine.runtime import Runtime, get_runtime
from sync.http import connect, errors, health, people, sessions

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access = logging.getLogger("sync.http.access")


class BodyLimit:
    """Refuse a body over ``limit`` bytes with 413 before it is read into memory.

    A declared Content-Length is checked up front; a chunked body is counted as
    it streams and cut off once it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(send, limit)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"error": f"the body is over {limit} bytes (CALSYNC_HTTP_MAX_BODY_BYTES)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One line per request (JSON under ``calsync serve``): method, route template, status, milliseconds.

    Never the query string, a header or a body: connect-link tokens, OAuth codes
    and bearer tokens travel there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            health.REQUESTS.labels(route=route, status=str(status)).inc()
            ms = round((time.perf_counter() - started) * 1000, 1)
            access.info("%s %s %s %.1fms", scope["method"], route, status, ms,
                        extra={"fields": {"method": scope["method"], "route": route, "status": status, "ms": ms}})


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """The app of ``calsync serve`` over ``runtime`` (this process's, by default)."""
    app = FastAPI(title="calsync", version=version("calsync"), docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Sessions in, calendars kept in line; connect links for people.")
    app.state.runtime = (lambda: runtime) if runtime is not None else get_runtime
    errors.install(app)
    for router in (sessions.router, people.router, connect.router, health.router):
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # The last added is the outermost: every request, a refused one too, is logged and counted.
    app.add_middleware(BodyLimit, limit=lambda: app.state.runtime().settings.http_max_body_bytes)
    app.add_middleware(AccessLog)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's spec plus the session's JSON Schema as ``SessionIn`` (the PUT body is read raw)."""
    if app.openapi_schema is None:
        from sync.api import intake_schema

        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema = intake_schema()
        defs = schema.pop("$defs", {})
        text = json.dumps({"SessionIn": schema, **defs}).replace('"#/$defs/', '"#/components/schemas/')
        spec.setdefault("components", {}).setdefault("schemas", {}).update(json.loads(text))
        app.openapi_schema = spec
    return app.openapi_schema
