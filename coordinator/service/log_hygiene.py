"""Bounded logs under attack (issue 13 F10, F12): a :class:`logging.Filter` that ``serve`` installs on the root
logger's handlers.

- Every record is cut to ``max_chars`` characters (message and traceback each), with ``… (N chars)`` appended:
  attacker-controlled text (a 15 MiB unsigned frame, a huge header) never becomes a 15 MB log line.
- The same message *template* (logger, level, the message with numbers and hex ids folded) passes at most
  ``per_window`` times per ``window`` seconds; the next one says that it is suppressed, the rest are dropped and
  counted, and the first one of the next window carries the count. 1,000 bad frames give a dozen lines, not 1,000.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

_VARIABLE = re.compile(r"[0-9a-fA-F]{8,}|\d+")
_MARK = "_fl_log_hygiene"  # set on a record once judged: several handlers share one record
MAX_TEMPLATES = 4096


def cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    tail = f"… ({len(text)} chars)"
    return text[:max(0, max_chars - len(tail))] + tail


@dataclass
class _Window:
    start: float
    count: int = 0
    suppressed: int = 0


class LogHygiene(logging.Filter):
    def __init__(self, max_chars: int = 2000, per_window: int = 10, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.max_chars, self.per_window, self.window, self.clock = max_chars, per_window, window, clock
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self.suppressed_total = 0

    def _template(self, record: logging.LogRecord, message: str) -> tuple[str, int, str]:
        text = str(record.msg) if record.args else message
        return record.name, record.levelno, _VARIABLE.sub("#", text[:120])

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, _MARK, None)
        if verdict is not None:
            return bool(verdict)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what we have rather than lose the record
            message = f"{record.msg!r} % {record.args!r}"
        keep = self._rate(record, message)
        setattr(record, _MARK, keep)
        if not keep:
            return False
        if keep == "last":
            message = (f"{cut(message, self.max_chars // 2)} [repeated {self.per_window} times in "
                       f"{self.window:g} s: suppressing this message for the rest of the interval]")
        elif isinstance(keep, int) and keep is not True and keep > 0:
            message = f"{message} [{keep} similar messages suppressed in the previous interval]"
        record.msg, record.args = cut(message, self.max_chars), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = cut(record.exc_text, self.max_chars)
        if record.stack_info:
            record.stack_info = cut(record.stack_info, self.max_chars)
        return True

    def _rate(self, record: logging.LogRecord, message: str) -> bool | int | str:
        """True (log), False (drop), "last" (log, announcing the suppression) or a count of the previous
        interval's suppressed repeats (log with it)."""
        now = self.clock()
        key = self._template(record, message)
        w = self._windows.get(key)
        previous = 0
        if w is None or now - w.start >= self.window:
            previous = w.suppressed if w is not None else 0
            if w is None and len(self._windows) >= MAX_TEMPLATES:
                self._windows = {k: v for k, v in self._windows.items() if now - v.start < self.window}
                if len(self._windows) >= MAX_TEMPLATES:  # still full of live templates: forget the oldest half
                    keep = sorted(self._windows.items(), key=lambda kv: kv[1].start)[MAX_TEMPLATES // 2:]
                    self._windows = dict(keep)
            w = self._windows[key] = _Window(now)
        w.count += 1
        if w.count <= self.per_window:
            return previous or True
        if w.count == self.per_window + 1:
            return "last"
        w.suppressed += 1
        self.suppressed_total += 1
        return False


def install(max_chars: int = 2000, per_window: int = 10, logger: logging.Logger | None = None) -> LogHygiene:
    """Add one :class:`LogHygiene` to every handler of ``logger`` (default: the root logger) that has none yet."""
    target = logger or logging.getLogger()
    hygiene = LogHygiene(max_chars, per_window)
    for handler in target.handlers:
        if not any(isinstance(f, LogHygiene) for f in handler.filters):
            handler.addFilter(hygiene)
    return hygiene


def uninstall(hygiene: LogHygiene, logger: logging.Logger | None = None) -> None:
    for handler in (logger or logging.getLogger()).handlers:
        handler.removeFilter(hygiene)


__all__ = ["LogHygiene", "cut", "install", "uninstall"]
