"""Connecting a calendar through the provider's consent page: the URL, then the callback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlparse

from sync.accounts.grants import save_grant
from sync.accounts.oauth_state import StateSigner
from sync.engine.people import resync_user
from sync.engine.runtime import Runtime, credential_box
from sync.errors import FieldError, InvalidInput
from sync.providers.connector import PROVIDERS, connector_for
from sync.store.models import OAuthFlow, Person


def signer(rt: Runtime) -> StateSigner:
    return StateSigner(rt.settings.require("secret_keys")[0].get_secret_value())


def connect_url(rt: Runtime, user_id: str, provider: str) -> tuple[str, str]:
    """The consent URL to send the person to, and the state that identifies the flow."""
    if provider not in PROVIDERS:
        raise InvalidInput([FieldError("provider", f"must be one of {', '.join(PROVIDERS)}")])
    sign = signer(rt)
    state = sign.sign(user_id, provider)
    with rt.store.tx() as db:
        person = db.get(Person, user_id)
        hint = person.email if person and person.email else None
    st = sign.verify(state)
    url, flow = connector_for(rt.settings, provider).start(state, sign.verifier(st), hint)
    if flow is not None:
        sealed = credential_box(rt.settings).seal(flow)
        with rt.store.tx() as db:
            db.add(OAuthFlow(state=state, user_id=user_id, provider=provider, flow=sealed,
                             expires_at=datetime.fromtimestamp(st.expires, timezone.utc)))
    return url, state


def _callback(pasted: str, state: str | None) -> tuple[dict[str, str], str]:
    """The code and state out of what was pasted.

    A redirected URL (or its ``?query``) carries both. A bare code carries no
    state, and the state is what says whose consent this is (and derives the
    PKCE verifier), so a bare code is taken only with ``state``: the one this
    same command just issued, when the person consented to the URL it printed.
    """
    pasted = pasted.strip()
    if "://" in pasted or pasted.startswith("?"):
        query = {k: v[0] for k, v in parse_qs(urlparse(pasted).query).items()}
        if "error" in query:
            raise InvalidInput([FieldError("callback", f"consent refused: {query['error']}")])
    elif state is None:
        raise InvalidInput([FieldError("callback", "a bare code does not say whose consent it is: give the whole "
                                                   "redirected URL (its state names the person)")])
    else:
        query = {"code": pasted}
    query.setdefault("state", state or "")
    if not query.get("code") or not query["state"]:
        raise InvalidInput([FieldError("callback", "needs the code and state: give the whole redirected URL")])
    return query, query["state"]


def complete_connect(rt: Runtime, pasted: str, enqueue: Callable[[str], None], *, state: str | None = None,
                     user_id: str | None = None, provider: str | None = None) -> int:
    """Finish a connect from the redirected URL (or a bare code with the state we issued).

    ``user_id`` and ``provider`` are who the caller is connecting (the CLI
    always says): the signed state must name the same, or nothing happens. A
    redirect is a bearer of someone's consent, and without this check pasting
    another person's redirect into this person's command would connect the
    other person while reporting this one connected. The check comes before
    the code is exchanged, so a refused redirect still works for its owner.
    """
    query, state = _callback(pasted, state)
    sign = signer(rt)
    st = sign.verify(state)
    if user_id is not None and st.user_id != user_id:
        raise InvalidInput([FieldError("callback", f"this consent was given for {st.user_id!r}, not {user_id!r}; "
                                                   "nothing changed")])
    if provider is not None and st.provider != provider:
        raise InvalidInput([FieldError("callback", f"this consent is for {st.provider}, not {provider}; "
                                                   "nothing changed")])
    connector = connector_for(rt.settings, st.provider)
    flow = None
    if connector.keeps_flow:
        with rt.store.tx() as db:
            row = db.get(OAuthFlow, state)
            if row is None:
                raise InvalidInput([FieldError("state", "no connect in progress for it (already used?)")])
            flow = credential_box(rt.settings).open(row.flow)
            db.delete(row)
    grant = connector.finish(flow, query, sign.verifier(st))
    integration_id = save_grant(rt, st.user_id, st.provider, grant)
    resync_user(rt, st.user_id, enqueue)
    return integration_id
