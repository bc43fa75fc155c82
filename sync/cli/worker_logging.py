"""Logging for Dramatiq worker processes started by ``calsync worker --log-config FILE``.

Dramatiq imports this module in every worker process (after the broker
module), where it applies the dictConfig JSON named by ``CALSYNC_LOG_CONFIG``.
Each process's stdout is a pipe that Dramatiq's main process reads line by
line, so lines from different processes never interleave mid-line.
"""

from __future__ import annotations

import json
import logging.config
import os
from pathlib import Path

if os.environ.get("CALSYNC_LOG_CONFIG"):
    logging.config.dictConfig(json.loads(Path(os.environ["CALSYNC_LOG_CONFIG"]).read_text(encoding="utf-8")))
