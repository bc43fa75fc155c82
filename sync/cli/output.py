"""How commands print: rich tables for a person at a terminal, plain lines for pipes, JSON on request.

Plain output is tab-separated with a header line, so ``cut -f`` and ``awk``
work on it; rich is imported only when a terminal will actually see a table.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import click

#: The ``--json`` flag every reporting command takes.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON only.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


#: Control characters that survive ``str.split()``: NUL, backspace, ESC (terminal escape sequences), DEL, C1.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def one_line(text: str) -> str:
    """``text`` as one printable line: whitespace runs (CR, LF, tab…) become one space, and other control
    characters are shown escaped (``\\x1b``), so an id or a provider's error text can neither split a
    line a script reads, nor forge a tab-separated column, nor drive the operator's terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", " ".join(text.split()))


#: An ISO 8601 timestamp as the store and JSON output write them (with a UTC offset).
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)")


def when(moment: datetime) -> str:
    """A time an operator reads at a glance, to the minute, in UTC: ``2026-12-03 02:19 UTC``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def cell(value: Any) -> str:
    """One table cell on one line: values may carry provider error text with newlines; times
    (and ISO timestamps) print to the minute, without microseconds."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, str) and _ISO.fullmatch(value):
        return when(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return one_line(str(value)) or "-"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> None:
    rows = [[cell(v) for v in row] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        # markup off: titles and names come from the platform and may contain "[...]".
        t = Table(title=title, title_justify="left")
        for name in columns:
            t.add_column(name, overflow="fold")
        for row in rows:
            t.add_row(*row)
        Console(markup=False, highlight=False).print(t)
        return
    if title:
        click.echo(f"# {title}")
    click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join(row))


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """A record as ``name: value`` lines; the same on a terminal and in a pipe."""
    pairs = list(pairs)
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        click.echo(f"{name + ':':<{width + 1}} {cell(value)}")
