"""The HTML body every calendar provider shows: agenda, link, place, "View & edit".  (pure)

Google and Outlook both take HTML for the event body, so one renderer serves
both; only email has its own text/HTML pair (see :mod:`sync.mail.imip`).
"""

from __future__ import annotations

from html import escape

from sync.core.render import RenderedEvent


def event_html(event: RenderedEvent) -> str:
    parts = []
    if event.meeting_url:
        url = escape(event.meeting_url, quote=True)
        parts.append(f'<p>Join: <a href="{url}">{url}</a></p>')
    if event.location:
        parts.append(f"<p>Where: {escape(event.location)}</p>")
    if event.agenda_html:
        parts.append(event.agenda_html)
    if event.view_url:
        parts.append(f'<p><a href="{escape(event.view_url, quote=True)}">View &amp; edit</a></p>')
    return "\n".join(parts)
