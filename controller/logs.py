"""Logging for the daemons (controller and edge agent): plain lines or one JSON object per line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from pythonjsonlogger.json import JsonFormatter


def setup_logging(
    fmt: str, level: str, *, quiet: Iterable[str] = (), silenced: Iterable[str] = ()
) -> None:
    """Log to stderr at `level`, as text or JSON (`fmt`). The `quiet` loggers (MQTT client
    chatter) stay at WARNING unless the level is lower; the `silenced` ones log only CRITICAL."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", timestamp=False)
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in silenced:
        logging.getLogger(name).setLevel(logging.CRITICAL)
