"""A stdlib logging formatter that writes one JSON object per line, for log shippers.

Referenced by name from ``config/logging.json``; kept apart from
:mod:`sync.engine.worker_logging` because dictConfig imports it while that
module is still being imported.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from sync.engine import logcontext


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        # Structured fields: bound by the engine around the work, or passed with ``extra=``.
        line.update(logcontext.current())
        line.update({k: str(getattr(record, k)) for k in logcontext.FIELDS if getattr(record, k, None) is not None})
        # A record may carry its own structured fields (the HTTP access line does).
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
