"""structlog set-up: JSON lines in production, readable lines on a terminal.

Libraries log through the standard library (py-libp2p, aiohttp, asyncio...). Their records go
through the same renderer as ours (``structlog.stdlib.ProcessorFormatter`` on the root
handler), so a JSON log holds only JSON lines. py-libp2p resets its logger when it is first
imported (no handler, no propagation: Python's last-resort handler then prints its warnings as
bare text), so ``configure`` imports it first and sets its logger afterwards.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

# Floors for chatty libraries: their records below these levels are dropped whatever
# --log-level says. py-libp2p logs every failed dial at ERROR ("Failed to open TCP stream",
# "failed to upgrade security"), and membership keeps probing dead peers several times a
# second: at --log-level debug its ERROR lines are shown, otherwise only CRITICAL. We log
# what matters ourselves (bootstrap.retry, member.down...).
LIBRARY_FLOORS = {
    "libp2p": logging.CRITICAL,
    "multiaddr": logging.ERROR,
    "aiohttp.access": logging.ERROR,
    "trio_asyncio": logging.ERROR,
    "asyncio": logging.ERROR,
}
LIBP2P_DEBUG_FLOOR = logging.ERROR


class _Floors(logging.Filter):
    """Applies the floors on the root handler, so a library logger that sets its own level
    (py-libp2p's auto_connector sets INFO on import) cannot get under them."""

    def __init__(self, floors: dict[str, int]) -> None:
        super().__init__()
        self.floors = floors

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        for prefix, floor in self.floors.items():
            if name == prefix or name.startswith(prefix + "."):
                return record.levelno >= floor
        return True


def _renderer(console: bool) -> Any:
    if console:
        return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return structlog.processors.JSONRenderer()


def configure(fmt: str = "auto", level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = _renderer(console)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        # One write per line (PrintLogger's print() writes the newline separately, so the
        # lines of processes sharing a stderr, a node and its --http-workers, interleaved).
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    libp2p_debug = bool(os.environ.get("LIBP2P_DEBUG"))  # py-libp2p's own switch: its logging
    floors = {
        name: max(lvl, LIBP2P_DEBUG_FLOOR if name == "libp2p" and lvl <= logging.DEBUG else f)
        for name, f in LIBRARY_FLOORS.items()
        if not (name == "libp2p" and libp2p_debug)
    }
    handler.addFilter(_Floors(floors))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    logging.captureWarnings(True)  # warnings.warn(...) from libraries: a log line, not stderr

    if not libp2p_debug:
        import libp2p  # noqa: F401  # its import-time reset must happen before what follows

        lib = logging.getLogger("libp2p")
        lib.handlers.clear()
        lib.propagate = True
    for name, floor in floors.items():
        logging.getLogger(name).setLevel(floor)  # cheap: most records are not even made
