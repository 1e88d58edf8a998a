"""casaguard's event logger: structlog event dicts, emitted through ``logging``.

Every module logs with ``log = events.get_logger()`` and keyword fields
(``log.info("task_finished", task="ft", pid=4242, outcome="ok")``). The
events leave through the standard library logger named ``casaguard``
(:data:`LOGGER_NAME`), so the *application's* logging configuration decides
what is shown and where; casaguard never calls ``structlog.configure`` and
never adds a handler:

- nothing configured: Python's last-resort handler prints WARNING and above
  on stderr; info and debug events are dropped; nothing goes to stdout;
- ``logging.basicConfig(level=logging.INFO)``: info events are shown, as
  ``task_finished elapsed_s=2.1 outcome=ok pid=4242 task=ft vis=a.ms``;
- an application that configured structlog (``structlog.configure``): its
  processor chain shapes casaguard's events as it shapes its own, and the
  result goes to ``logging.getLogger("casaguard")``. With the stdlib recipe
  (chain ending in ``ProcessorFormatter.wrap_for_formatter``) its
  ``ProcessorFormatter`` receives the event dicts. ``structlog.testing.capture_logs``
  works the same way.

Without ``structlog.configure`` the record's message is the event dict itself
(an :class:`Event`), so a ``ProcessorFormatter`` on a handler also receives
the dict, while a plain ``logging.Formatter`` shows its one-line ``str()``.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

#: The standard library logger every casaguard event goes through.
LOGGER_NAME = "casaguard"


class Event(dict[str, Any]):
    """An event dict that reads as one line for a plain ``logging.Formatter``."""

    def __str__(self) -> str:
        fields = " ".join(
            f"{key}={value}"
            for key, value in sorted(self.items())
            if key != "event" and not key.startswith("_")
        )
        return f"{self.get('event', '')} {fields}".strip()


def _route(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    """Shape one event for ``logging``: the application's structlog chain if it set one."""
    if not structlog.is_configured():
        return (Event(event_dict),), {"extra": {"_logger": logger, "_name": method_name}}
    result: Any = event_dict
    for processor in structlog.get_config()["processors"]:
        result = processor(logger, method_name, result)
    if isinstance(result, dict) and "event" in result:
        # A chain that renders nothing (made for another logger): the stdlib logger would
        # take the dict as keyword arguments and raise inside the caller's CASA call.
        return (Event(result),), {}
    return result


def get_logger() -> structlog.stdlib.BoundLogger:
    """Return casaguard's logger: a structlog ``stdlib.BoundLogger`` over ``logging``.

    Returns:
        A logger with ``debug``/``info``/``warning``/``error`` taking an event name
        and keyword fields, writing to ``logging.getLogger(LOGGER_NAME)``.
    """
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(LOGGER_NAME),
        processors=[_route],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return logger
