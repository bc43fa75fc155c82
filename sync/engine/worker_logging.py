"""Logging for Dramatiq worker processes started by ``calsync worker --log-config FILE``.

Dramatiq imports this module in every worker process (after the broker
module), where it applies the dictConfig JSON named by ``CALSYNC_LOG_CONFIG``.
Each process's stdout is a pipe that Dramatiq's main process reads line by
line, so lines from different processes never interleave mid-line.

``calsync worker`` calls :func:`apply` on the file once before it starts
Dramatiq: a file that cannot be applied is then one line from the command,
not a traceback from every worker process and a dead worker pool.
"""

from __future__ import annotations

import json
import logging.config
import os
from pathlib import Path
from typing import Any

#: The variable ``calsync worker`` sets to the resolved ``--log-config`` path for its worker processes.
VARIABLE = "CALSYNC_LOG_CONFIG"


class LogConfigError(ValueError):
    """The file cannot be used as a logging configuration; the message says why on one line."""


def load(path: Path) -> dict[str, Any]:
    """The dictConfig in ``path``: a JSON object, read as UTF-8."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LogConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise LogConfigError(f"cannot be read ({exc.strerror or exc})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LogConfigError(f"not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(config, dict):
        raise LogConfigError(f"must be a JSON object (a logging dictConfig), not a JSON {type(config).__name__}")
    return config


def apply(path: Path) -> None:
    """Load ``path`` and hand it to :func:`logging.config.dictConfig`, naming what logging refused.

    dictConfig wraps the real cause (an unknown class, a log file's missing
    directory) in "Unable to configure handler 'x'"; both halves are kept.
    """
    config = load(path)
    try:
        logging.config.dictConfig(config)
    except Exception as exc:  # dictConfig raises ValueError, TypeError, ImportError, AttributeError, OSError...
        raise LogConfigError(_reason(exc)) from None


def _reason(exc: BaseException) -> str:
    parts = [str(exc) or type(exc).__name__]
    if exc.__cause__ is not None:
        parts.append(str(exc.__cause__) or type(exc.__cause__).__name__)
    return " ".join(": ".join(parts).split())


if os.environ.get(VARIABLE):
    apply(Path(os.environ[VARIABLE]))
