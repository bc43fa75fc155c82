"""``calsync keys``: rotating the Fernet keys that seal stored credentials."""

from __future__ import annotations

import sys

import click

from sync.cli.output import emit_json, json_option
from sync.cli.usage import OneLineGroup


@click.group(cls=OneLineGroup)
def keys() -> None:
    """Secret keys for credentials at rest (CALSYNC_SECRET_KEYS)."""


@keys.command()
@json_option
def rotate(as_json: bool) -> None:
    """Re-encrypt every stored credential under the first key in CALSYNC_SECRET_KEYS.

    Prepend the new key, run this, and drop the old key once nothing is
    reported unreadable. Exits 1 if some credential no configured key opens.
    """
    from sync.accounts import rotate_keys
    from sync.engine.runtime import get_runtime

    counts = rotate_keys(get_runtime())
    if as_json:
        emit_json(counts.as_dict())
    else:
        click.echo(f"rotated\t{counts.rotated}\nunreadable\t{counts.unreadable}")
    if counts.unreadable:
        sys.exit(1)
