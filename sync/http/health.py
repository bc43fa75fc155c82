"""``/healthz`` (the process answers), ``/readyz`` (it can do its job), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from sync.http.models import ErrorOut

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])

#: Every answer, by route template (never the raw path: ids would explode the label set) and status.
REQUESTS = Counter("calsync_http_requests_total", "HTTP requests by route and status.", ["route", "status"])
#: Session intake through the API, by outcome (created, updated, unchanged, stale, conflict, invalid).
INTAKE = Counter("calsync_intake_total", "Sessions put through the API, by outcome.", ["outcome"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up and answering."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorOut, "description": "the database or the broker is down"}})
def readyz(request: Request) -> JSONResponse:
    """The database answers a query and the broker a ping; 503 naming the one that does not."""
    from sqlalchemy import text

    from sync.engine.queues import broker_client

    rt = request.app.state.runtime()
    down = []
    try:
        with rt.store.tx() as db:
            db.execute(text("SELECT 1"))
    except Exception:  # any driver error means not ready; the log of the failing call says why
        down.append("database")
    try:
        client = broker_client(rt.settings)
        if client is not None:
            with client:
                client.ping()
    except Exception:
        down.append("broker")
    if down:
        return JSONResponse({"error": f"not ready: {' and '.join(down)} unreachable"}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text: HTTP requests, intake outcomes, webhook deliveries and the health gauges."""
    from sync.engine.metrics import refresh_health
    from sync.engine.queues import broker_client

    rt = request.app.state.runtime()
    try:
        refresh_health(broker_client(rt.settings), rt)
    except Exception as exc:  # stale gauges beat no metrics: the scrape itself must not fail
        log.warning("health gauges not refreshed: %s", type(exc).__name__)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
