"""One logging configuration for every process: `serve` (given to uvicorn, so its own lines and
the app's share a format), `worker` and the other commands."""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any, TextIO

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class CurrentStream(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever `sys.stderr` (or `sys.stdout`) is when it
    writes, not when it was made: commands run in-process (tests, tools) swap the streams, and a
    handler holding a closed one would fail on every later line."""

    def __init__(self, which: str = "stderr") -> None:
        self._which = which
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return getattr(sys, self._which)

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` document: FlowStudio's loggers at `level`
    (FLOWSTUDIO_LOG_LEVEL), uvicorn's at INFO, everything else at WARNING; all to standard
    error, access lines to standard output."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {"format": _FORMAT},
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(asctime)s %(levelname)-7s access: %(client_addr)s "%(request_line)s" '
                "%(status_code)s",
                "use_colors": False,
            },
        },
        "handlers": {
            "default": {"()": CurrentStream, "formatter": "default", "which": "stderr"},
            "access": {"()": CurrentStream, "formatter": "access", "which": "stdout"},
        },
        "loggers": {
            "flowstudio": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
