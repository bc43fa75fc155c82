"""The connect pages: the person opens their link, consents at the provider, and comes back.

No API token here: the signed link is the authority. The browser that opens a
link gets a cookie naming it; the provider's callback is honoured only in that
same browser, so a callback carrying another person's consent connects nobody.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sync.accounts.links import LinkRefused, finish_consent, open_link, start_consent
from sync.errors import AuthError, ConfigError, InvalidInput, TransientError
from sync.http import pages
from sync.providers.connector import configured

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)

COOKIE = "calsync_connect"
_STATUS = {"invalid": 404, "expired": 410, "used": 410}


@router.get("/connect/{token}")
def connect_page(request: Request, token: str, provider: str | None = None) -> Response:
    """The provider choice (or straight to the one the link names), then the consent page."""
    rt = request.app.state.runtime()
    try:
        link = open_link(rt, token)
        choice = provider or link.provider
        if choice is None:
            return pages.choose(token, configured(rt.settings))
        consent = start_consent(rt, link, choice)
    except LinkRefused as exc:
        return pages.refused(str(exc), _STATUS[exc.kind])
    except InvalidInput as exc:
        return pages.refused(exc.errors[0].reason, 400)
    except ConfigError as exc:
        return _unavailable(exc)
    response = RedirectResponse(consent, status_code=303, headers=pages.HEADERS)
    # The scheme people's browsers use, not the one this hop arrived on (a TLS proxy speaks http to us).
    secure = rt.settings.base_url.startswith("https://") or request.url.scheme == "https"
    response.set_cookie(COOKIE, link.id, max_age=3600, httponly=True, samesite="lax", secure=secure,
                        path="/oauth/")
    return response


def _callback(request: Request, provider: str) -> Response:
    rt = request.app.state.runtime()
    query = request.query_params
    if "error" in query:
        return pages.refused("You did not give calsync access to your calendar, so nothing changed. Open your "
                             "link again if you want to connect it.", 400)
    from sync.engine.tasks import enqueue

    try:
        link = finish_consent(rt, provider, str(request.url), query.get("state", ""), request.cookies.get(COOKIE),
                              enqueue)
    except LinkRefused as exc:
        return pages.refused(str(exc), _STATUS[exc.kind])
    except InvalidInput as exc:
        return pages.refused(f"The sign-in could not be completed: {exc.errors[0].reason}.", 400)
    except AuthError:
        return pages.refused("The provider did not accept this sign-in. Open your link again to retry.", 400)
    except TransientError:
        return pages.refused("The provider could not be reached. Open your link again in a minute.", 503)
    except ConfigError as exc:
        return _unavailable(exc)
    if link.return_to:
        done = RedirectResponse(link.return_to, status_code=303, headers=pages.HEADERS)
    else:
        done = pages.connected(provider, None)
    done.delete_cookie(COOKIE, path="/oauth/")
    return done


def _unavailable(exc: ConfigError) -> Response:
    """calsync cannot connect this provider (its OAuth client is not set): a page for the person, the why for ops."""
    log.error("connect: %s", exc)
    return pages.refused("This calendar cannot be connected here yet. Nothing changed; please tell the people "
                         "who sent you this link.", 503)


@router.get("/oauth/google/callback", response_class=HTMLResponse)
def google_callback(request: Request) -> Response:
    return _callback(request, "google")


@router.get("/oauth/outlook/callback", response_class=HTMLResponse)
def outlook_callback(request: Request) -> Response:
    return _callback(request, "outlook")
