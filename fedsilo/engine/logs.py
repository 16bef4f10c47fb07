"""structlog set-up, once per process: JSON for machines, a console renderer for people."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal, TextIO, cast

import structlog

LogFormat = Literal["auto", "json", "console"]


class _CurrentStream:
    """``sys.stdout`` or ``sys.stderr`` as it is at each write, not as it was at set-up.

    A logger bound to the stream object of the moment breaks once that object is closed
    (an in-process caller that captured output, e.g. a test): later lines would raise
    ``ValueError: I/O operation on closed file`` from inside the aggregator.
    """

    def __init__(self, name: Literal["stdout", "stderr"]) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return int(getattr(sys, self.name).write(text))

    def flush(self) -> None:
        getattr(sys, self.name).flush()


def configure_logging(log_format: LogFormat = "auto", level: str = "INFO") -> None:
    """JSON lines on stdout (containers, ``--log-format json``) or readable lines on stderr."""
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
        stream = _CurrentStream("stdout")
    else:
        colors = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        processors.append(structlog.dev.ConsoleRenderer(colors=colors))
        stream = _CurrentStream("stderr")
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # one write() per line: hospital workers share stdout, and lines must not interleave
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, stream)),
        cache_logger_on_first_use=False,
    )
