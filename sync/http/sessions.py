"""``/v1/sessions/{id}``: the platform puts, cancels and reads sessions."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sync import api
from sync.core.session import as_model
from sync.errors import FieldError, InvalidInput
from sync.http.auth import require_token
from sync.http.errors import error
from sync.http.health import INTAKE
from sync.http.models import COMMON, ONE_LINE_ID, ErrorOut, IntakeOut, SessionOut

router = APIRouter(prefix="/v1/sessions", dependencies=[Depends(require_token)], tags=["sessions"])

SessionId = Path(min_length=1, max_length=200, pattern=ONE_LINE_ID,
                 description="The platform's session id: one line, no control characters.")


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _body(raw: bytes) -> dict[str, Any]:
    """The JSON object in ``raw``.

    Raises:
      InvalidInput: not an object, or nested past what a session can hold.
      ValueError: not JSON at all.
    """
    try:
        data = json.loads(raw)
    except RecursionError:
        raise InvalidInput([FieldError("body", "nested too deeply")]) from None
    if not isinstance(data, dict):
        raise InvalidInput([FieldError("body", f"expected a JSON object, got {type(data).__name__}")])
    return data


def _intake(result: api.IntakeResult) -> JSONResponse:
    if result.outcome in ("stale", "conflict"):
        reason = result.errors[0].reason if result.errors else \
            f"version {result.version} is older than the stored version {result.stored_version}"
        return error(409, reason)
    return JSONResponse(IntakeOut(id=result.session_id or "", version=result.version or 0,
                                  outcome=result.outcome).model_dump(), status_code=202)  # type: ignore[arg-type]


@router.put("/{session_id}", status_code=202, response_model=IntakeOut, responses={
    **COMMON, 409: {"model": ErrorOut, "description": "older than the stored version, or the same version changed"},
    415: {"model": ErrorOut, "description": "the body is not JSON"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/SessionIn"}}}}})
async def put_session(request: Request, session_id: str = SessionId) -> JSONResponse:
    """Store the session (the contract's JSON) and schedule its calendars. Nothing is half-stored.

    The body is read raw rather than by the framework, so a non-JSON body is a 415, not a 422.
    """
    if not _is_json(request.headers.get("content-type")):
        return error(415, "send the session as application/json")
    raw = await request.body()
    try:
        data = _body(raw)
    except ValueError:
        return error(415, "the body is not valid JSON")
    if "id" in data and data["id"] != session_id:
        raise InvalidInput([FieldError("id", f"{data['id']!r} differs from the path's {session_id!r}")])
    data["id"] = session_id
    try:
        result = await run_in_threadpool(api.upsert_session, data, rt=request.app.state.runtime())
    except InvalidInput:
        INTAKE.labels(outcome="invalid").inc()
        raise
    INTAKE.labels(outcome=result.outcome).inc()
    return _intake(result)


@router.delete("/{session_id}", status_code=202, response_model=IntakeOut,
               responses={**COMMON, 404: {"model": ErrorOut, "description": "no such session"}})
def cancel_session(request: Request, session_id: str = SessionId) -> JSONResponse:
    """Cancel the session: every copy is withdrawn (events deleted, CANCELs mailed)."""
    return _intake(api.cancel_session(session_id, rt=request.app.state.runtime()))


@router.get("/{session_id}", response_model=SessionOut,
            responses={**COMMON, 404: {"model": ErrorOut, "description": "no such session"}})
def get_session(request: Request, session_id: str = SessionId) -> SessionOut:
    """The session as stored and, per participant, where their copy is and how it went."""
    view = api.get_session(session_id, rt=request.app.state.runtime())
    return SessionOut(
        session=as_model(view.session).model_dump(mode="json"), revision=view.revision,
        synced_revision=view.synced_revision,
        placements=[{"user_id": p.user_id, "channel": p.channel, "state": p.state, "live": p.live,
                     "sequence": p.sequence, "event_id": p.external_id if p.channel != "email" else p.uid,
                     "last_error": p.last_error} for p in view.placements])  # type: ignore[misc]
