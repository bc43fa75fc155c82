"""Making user-supplied text safe for the places it ends up: headers, HTML, plain text.

Agenda HTML comes from a rich-text editor on the platform and is shown in
mail clients and calendars, so it is cut down to a small allow-list. Anything
that may reach an email header is stripped of control characters and of
RFC 2047 encoded-word markers, because Python 3.11.7 still re-interprets
``=?...?=`` in headers (CVE-2024-6923).
"""

from __future__ import annotations

import re
from functools import lru_cache
from html.parser import HTMLParser

import nh3

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ENCODED_WORD = "=?"

ALLOWED_TAGS = frozenset(
    {"p", "br", "b", "strong", "i", "em", "u", "ul", "ol", "li", "a", "h1", "h2", "h3", "h4",
     "blockquote", "code", "pre", "span", "div"}
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
ALLOWED_URL_SCHEMES = frozenset({"https", "http", "mailto"})

_cleaner = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
    url_schemes=set(ALLOWED_URL_SCHEMES),
    link_rel="noopener noreferrer",
    strip_comments=True,
)


def has_control_chars(text: str) -> bool:
    return bool(_CONTROL.search(text))


def header_safe(text: str) -> str:
    """Defence in depth for header values: validation already rejects these, but
    a value that reached us some other way must still not split a header."""
    return _CONTROL.sub(" ", text).replace(_ENCODED_WORD, "= ?").strip()


def clean_html(html: str) -> str:
    return _cleaner.clean(html)


class _TextExtractor(HTMLParser):
    """Keeps paragraph and list structure that a tag-stripper would flatten."""

    _BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "blockquote", "pre", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n\n")
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag == "a":
            self._href.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self._href:
            href = self._href.pop()
            if href and not href.startswith("mailto:"):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


@lru_cache(maxsize=1024)
def html_to_text(html: str) -> str:
    """Plain-text rendering of sanitised HTML for DESCRIPTION and text/plain bodies.

    Cached: every participant of a session renders the same agenda."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
