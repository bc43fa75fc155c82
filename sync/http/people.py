"""``/v1/people/{user_id}``: connect links for a person, and their calendar connection."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request

from sync import accounts
from sync.accounts.links import create_link
from sync.core.states import Link
from sync.errors import NotFound
from sync.http.auth import require_token
from sync.http.models import COMMON, ONE_LINE_ID, ConnectLinkIn, ConnectLinkOut, DisconnectOut, ErrorOut, IntegrationOut

router = APIRouter(prefix="/v1/people", dependencies=[Depends(require_token)], tags=["people"])

UserId = Path(min_length=1, max_length=200, pattern=ONE_LINE_ID,
              description="The platform's user id: one line, no control characters.")
_NOT_FOUND = {404: {"model": ErrorOut, "description": "the person has no calendar connection"}}
#: Which integration is "the" connection when a person has several rows (one replaced another).
_RANK = {Link.ACTIVE: 0, Link.NEEDS_RECONNECT: 1, Link.DISCONNECTING: 2, Link.DISCONNECTED: 3}


@router.post("/{user_id}/connect-links", status_code=201, response_model=ConnectLinkOut, responses=COMMON)
def new_connect_link(request: Request, body: ConnectLinkIn, user_id: str = UserId) -> ConnectLinkOut:
    """A signed, single-use link to show or mail the person; it expires (7 days by default)."""
    link = create_link(request.app.state.runtime(), user_id, body.provider, body.return_to)
    return ConnectLinkOut(url=link.url, expires_at=link.expires_at)


@router.get("/{user_id}/integration", response_model=IntegrationOut, responses={**COMMON, **_NOT_FOUND})
def get_integration(request: Request, user_id: str = UserId) -> IntegrationOut:
    """The person's calendar connection: provider, account, status, why, and since when."""
    rows = [r for r in accounts.list_integrations(request.app.state.runtime()) if r.user_id == user_id]
    if not rows:
        raise NotFound(f"{user_id!r} has no calendar connection")
    latest_first = sorted(rows, key=lambda r: r.updated_at, reverse=True)
    row = min(latest_first, key=lambda r: _RANK[Link(r.status)])
    return IntegrationOut(user_id=row.user_id, provider=row.provider, account=row.account_email, status=row.status,
                          reason=row.reason, since=row.updated_at)  # type: ignore[arg-type]


@router.delete("/{user_id}/integration", status_code=202, response_model=DisconnectOut,
               responses={**COMMON, **_NOT_FOUND})
def disconnect(request: Request, user_id: str = UserId) -> DisconnectOut:
    """Disconnect as support staff would: events withdrawn, token revoked, invites by email from now on."""
    from sync.engine.tasks import enqueue

    result = accounts.disconnect(request.app.state.runtime(), user_id, reconcile_now=enqueue)
    return DisconnectOut(user_id=result.user_id, status=result.status, remaining=result.remaining,
                         sessions=result.sessions)
