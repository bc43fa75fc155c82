"""The few HTML pages a person sees: choose a provider, connected, or what went wrong.

They work without JavaScript and load nothing: every response carries a
Content-Security-Policy that allows no script, style, frame, form or base URL
from anywhere, so an injected string could not run even if escaping failed.
Every value is HTML-escaped.
"""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

#: Nothing may load or run; links still navigate.
CSP = ("default-src 'none'; img-src 'none'; style-src 'none'; script-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
NAMES = {"google": "Google Calendar", "outlook": "Outlook"}


def page(title: str, body_html: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    """A complete page; ``body_html`` must already be escaped."""
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            f"<body><main><h1>{escape(title)}</h1>{body_html}</main></body></html>")
    return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})


def choose(token: str, providers: list[str]) -> HTMLResponse:
    items = "".join(f'<li><a id="connect-{p}" href="/connect/{escape(token)}?provider={p}">Connect '
                    f"{NAMES[p]}</a></li>" for p in providers)
    return page("Connect your calendar",
                "<p>Your mentoring sessions will appear on the calendar you connect, and you will get no "
                f"email invites for them.</p><ul>{items}</ul>")


def connected(provider: str, return_to: str | None) -> HTMLResponse:
    back = f'<p><a id="return" href="{escape(return_to)}">Back</a></p>' if return_to else ""
    return page("Connected", f'<p id="result">Your {NAMES.get(provider, escape(provider))} is connected. Your '
                f"sessions will appear on it shortly, and emailed invites for them are cancelled.</p>{back}")


def refused(message: str, status: int) -> HTMLResponse:
    return page("Your calendar was not connected", f'<p id="result">{escape(message)}</p>', status)
