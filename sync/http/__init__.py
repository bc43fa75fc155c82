"""``calsync serve``: the platform API (``/v1``), the connect pages people open, and health and metrics.

An ASGI app (FastAPI on uvicorn). Handlers are plain functions run in the
server's thread pool, because below them calsync is synchronous; each one is a
thin translation between HTTP and :mod:`sync.api` / :mod:`sync.accounts`.
"""
