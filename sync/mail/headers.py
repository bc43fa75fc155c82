"""Header folding for invites: RFC 2047 encoded words that keep every space.  (pure)

Split from the invite builder because it is a mail concern, not a calendar one:
any message calsync sends with a person's name or a session title in a header
needs it.
"""

from __future__ import annotations

import base64
import email.policy
import re
import unicodedata
from collections import deque
from collections.abc import Iterator


class InvitePolicy(email.policy.EmailPolicy):
    """``EmailPolicy`` that folds Subject, From and To itself when they hold non-ASCII text.

    CPython's folder loses or invents the space between two RFC 2047 encoded
    words (python/cpython gh-92081 and its follow-ups): "Session with éclairs"
    reached mail clients as "…withéclairs" for a few percent of mixed-script
    titles, and display names in From/To as often. Decoders drop the whitespace
    between adjacent encoded words (RFC 2047 §6.2), so here every space that
    belongs to the text is written inside an encoded word, and the blanks
    between encoded words are only separators and folding points.

    Other headers, ASCII-only values, named groups and non-ASCII addr-specs
    still go through the standard folder: the first two need no encoded words,
    the last two never occur in an invite.
    """

    def fold(self, name: str, value: object) -> str:
        folded = _fold_by_hand(name, value, self.linesep)
        return super().fold(name, value) if folded is None else folded

    def fold_binary(self, name: str, value: object) -> bytes:
        folded = _fold_by_hand(name, value, self.linesep)
        return super().fold_binary(name, value) if folded is None else folded.encode("ascii")


#: SMTP line endings, but 7-bit bodies: non-ASCII text goes quoted-printable or
#: base64 (RFC 6047 §2.5) instead of raw 8bit, which relays without 8BITMIME mangle.
#: The settings of ``email.policy.SMTP.clone(cte_type="7bit")``, with the folding above.
POLICY = InvitePolicy(linesep="\r\n", cte_type="7bit")

_EW_PREFIX, _EW_SUFFIX = "=?utf-8?b?", "?="
_MAX_EW = 75  # RFC 2047 §2: an encoded word is at most 75 characters
_MAX_LINE = 76  # RFC 2047 §2: a line holding an encoded word is at most 76 characters
_ADDRESS_HEADERS = frozenset({"from", "to"})
#: Words that may stay as they are: VCHAR runs in unstructured text (RFC 5322
#: §3.2.5), atoms in a display-name phrase (§3.2.3). Anything else is encoded.
_UNSTRUCTURED_WORD = re.compile(r"[!-~]+")
_PHRASE_WORD = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _fold_by_hand(name: str, value: object, linesep: str) -> str | None:
    """The folded header line(s) with ``linesep``, or None to leave it to the standard folder."""
    if not hasattr(value, "name"):  # a raw source value, not a header object we built
        return None
    key = name.lower()
    if key == "subject":
        text = str(value)
        if text.isascii():
            return None
        items = _text_items(text, _UNSTRUCTURED_WORD, first_room=_MAX_LINE - len(name) - 2)
    elif key in _ADDRESS_HEADERS:
        items = _address_items(value, first_room=_MAX_LINE - len(name) - 2)
        if items is None:
            return None
    else:
        return None
    return linesep.join(_fold_lines(f"{name}:", items)) + linesep


def _address_items(value: object, *, first_room: int) -> list[tuple[bool, str]] | None:
    """From/To as items: each display name as words and encoded words, then ``<addr-spec>``.

    None when the standard folder is right for it: all-ASCII, named groups, or an
    addr-spec that is not ASCII (encoded words may not appear in one, RFC 2047 §5).
    """
    groups = getattr(value, "groups", ())
    if any(group.display_name is not None for group in groups):
        return None
    mailboxes = [mailbox for group in groups for mailbox in group.addresses]
    if (not mailboxes or all(m.display_name.isascii() for m in mailboxes)
            or not all(m.addr_spec.isascii() for m in mailboxes)):
        return None
    items: list[tuple[bool, str]] = []
    for index, mailbox in enumerate(mailboxes):
        comma = "," if index < len(mailboxes) - 1 else ""
        if mailbox.display_name:
            room = first_room if not items else _MAX_LINE - 1
            items += _text_items(mailbox.display_name, _PHRASE_WORD, first_room=room)
            items.append((True, f"<{mailbox.addr_spec}>{comma}"))
        else:
            items.append((True, f"{mailbox.addr_spec}{comma}"))
    return items


def _text_items(text: str, plain: re.Pattern[str], *, first_room: int) -> list[tuple[bool, str]]:
    """``text`` as (is_plain, text) items that the folder joins with single spaces.

    A word matching ``plain`` stays readable. Every run of other words becomes
    one item to encode, *with the spaces inside the run*, because a decoder
    drops the blanks between two encoded words (RFC 2047 §6.2). A space next to
    a plain word may stay outside: the blank between an encoded word and a
    plain word is kept. Plain words therefore never touch an empty word (from
    a double space), a word too long for a line is encoded, and a word with
    ``=?`` or ``?=`` is encoded lest a decoder take it for an encoded word.
    Lone surrogates cannot be written in UTF-8 and become U+FFFD.
    """
    words = _LONE_SURROGATE.sub("\ufffd", text).split(" ")
    last = len(words) - 1

    def stays_plain(i: int) -> bool:
        word = words[i]
        room = first_room if i == 0 else _MAX_LINE - 1
        return (bool(plain.fullmatch(word)) and "=?" not in word and "?=" not in word and len(word) <= room
                and (i == 0 or words[i - 1] != "") and (i == last or words[i + 1] != ""))

    items: list[tuple[bool, str]] = []
    run: list[str] = []
    for i, word in enumerate(words):
        if stays_plain(i):
            if run:
                items.append((False, " ".join(run)))
                run = []
            items.append((True, word))
        else:
            run.append(word)
    if run:
        items.append((False, " ".join(run)))
    return [item for item in items if item[1]]


def _fold_lines(label: str, items: list[tuple[bool, str]]) -> list[str]:
    """Lines of at most 76 characters where possible, joined later with CRLF: a fold
    is CRLF + one space, so unfolding gives back exactly one blank (RFC 5322 §2.2.3).

    Nothing folds right after the label: Python 3.11 keeps the blank of such a
    fold as part of the value. A run is kept in one encoded word when it fits on
    a line, since each boundary between encoded words is one more place for a
    decoder to get §6.2 wrong (CPython gh-128110 adds a space there in a display
    name); longer runs fill the line, then whole lines.
    """
    lines = [label]
    full = _ew_capacity(_MAX_LINE - 1)
    for is_plain, text in items:
        can_fold = len(lines) > 1 or lines[0] != label
        if is_plain:
            if can_fold and len(lines[-1]) + 1 + len(text) > _MAX_LINE:
                lines.append("")
            lines[-1] += " " + text
            continue
        here = _ew_capacity(_MAX_LINE - len(lines[-1]) - 1)
        size = len(text.encode("utf-8"))
        if can_fold and size > here and (size <= full or here < 12):
            lines.append("")
            here = full
        for n, chunk in enumerate(_chunks(text, first=max(here, 4), rest=full)):
            if n:
                lines.append("")
            lines[-1] += " " + _encoded_word(chunk)
    return lines


def _ew_capacity(room: int) -> int:
    """How many UTF-8 bytes one base64 encoded word can carry in ``room`` characters."""
    return max(0, (min(room, _MAX_EW) - len(_EW_PREFIX) - len(_EW_SUFFIX)) // 4 * 3)


def _encoded_word(chunk: str) -> str:
    return f"{_EW_PREFIX}{base64.b64encode(chunk.encode('utf-8')).decode('ascii')}{_EW_SUFFIX}"


def _chunks(text: str, *, first: int, rest: int) -> Iterator[str]:
    """``text`` cut into pieces of at most ``first``, then ``rest``, UTF-8 bytes.

    Cuts fall between characters, never inside a UTF-8 sequence (RFC 2047 §5:
    each encoded word holds whole characters), and where possible between
    grapheme clusters, so no client that shows encoded words one by one sees an
    accent or an emoji modifier apart from its base character.
    """
    limit, piece, used = first, "", 0
    queue = deque(_clusters(text))
    while queue:
        part = queue.popleft()
        size = len(part.encode("utf-8"))
        if used + size <= limit or (not piece and len(part) == 1):
            piece, used = piece + part, used + size
        elif piece:
            yield piece
            limit, piece, used = rest, "", 0
            queue.appendleft(part)
        else:  # the cluster does not fit even an empty piece: cut it between characters
            queue.extendleft(reversed(part))
    if piece:
        yield piece


_ZWJ = "\u200d"


def _clusters(text: str) -> Iterator[str]:
    """Approximate grapheme clusters: a character joins the previous one if it is a
    combining mark, ZWJ, variation selector, emoji modifier or tag, or follows a ZWJ."""
    cluster = ""
    for char in text:
        code = ord(char)
        joins = (unicodedata.category(char) in ("Mn", "Mc", "Me") or char == _ZWJ or cluster.endswith(_ZWJ)
                 or 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F)
        if cluster and not joins:
            yield cluster
            cluster = ""
        cluster += char
    if cluster:
        yield cluster


