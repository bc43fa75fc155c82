"""Every error the API returns, in the two shapes the contract promises.

``{"errors": [{"field", "message"}]}`` when the input names what is wrong,
``{"error": "..."}`` otherwise. Nothing here echoes a token, a body or a
traceback: the message says what the caller can change.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sync.errors import CalsyncError, ConfigError, FieldError, InvalidInput, NotFound

log = logging.getLogger(__name__)


def field_errors(status: int, errors: list[FieldError]) -> JSONResponse:
    return JSONResponse({"errors": [{"field": e.field, "message": e.reason} for e in errors]}, status_code=status)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _location(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "path", "query", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Map calsync's errors and the framework's onto the contract's JSON."""

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # The framework's answer to a body it cannot even decode (not UTF-8); bad input is a 422
            # everywhere else, and 400 is declared nowhere. calsync's own routes never raise a 400.
            return field_errors(422, [FieldError("body", "not valid JSON (UTF-8)")])
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A body that is not JSON at all is located at its byte offset ("body", 42): name the body.
        return field_errors(422, [FieldError("body" if e.get("type") == "json_invalid" else
                                             _location(tuple(e.get("loc", ()))), str(e.get("msg", "invalid")))
                                  for e in exc.errors()])

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        return field_errors(422, exc.errors)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        log.error("configuration: %s", exc)
        return error(503, "calsync is not configured for this request; see the server's log")

    @app.exception_handler(CalsyncError)
    async def _calsync(request: Request, exc: CalsyncError) -> JSONResponse:
        return error(502, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
