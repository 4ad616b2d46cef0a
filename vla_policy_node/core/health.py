"""Health levels from stated thresholds (no rclpy): what a node reports on /diagnostics.

A node hands its figures (a flat dict) and its checks; each check maps one figure to OK, WARN or
ERROR with the threshold in the message, so an operator reads why, not only that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


@dataclass(frozen=True)
class Above:
    """`key` above `warn` is WARN, above `error` ERROR (None: that level is never reached)."""
    key: str
    warn: float | None
    error: float | None = None
    unit: str = ""
    when: Callable[[dict], bool] = lambda figures: True    # checked only when this holds (e.g. armed)

    def level(self, figures: dict) -> tuple[int, str]:
        value = figures.get(self.key)
        if value is None or not self.when(figures):
            return OK, ""
        for bound, level in ((self.error, ERROR), (self.warn, WARN)):
            if bound is not None and value > bound:
                return level, f"{self.key} {value:.4g}{self.unit} > {bound:.4g}{self.unit}"
        return OK, ""


@dataclass(frozen=True)
class AboveShare:
    """`key` above `warn` (`error`) times figure `of` (e.g. a delay against the chunk's duration)."""
    key: str
    of: str
    warn: float | None
    error: float | None = None
    unit: str = ""

    def level(self, figures: dict) -> tuple[int, str]:
        value, whole = figures.get(self.key), figures.get(self.of)
        if value is None or not whole:
            return OK, ""
        for share, level in ((self.error, ERROR), (self.warn, WARN)):
            if share is not None and value > share * whole:
                return level, (f"{self.key} {value:.4g}{self.unit} > {share:g} x {self.of} "
                               f"{whole:.4g}{self.unit}")
        return OK, ""


@dataclass(frozen=True)
class Flag:
    """`key` true is `level` with `message`."""
    key: str
    level_if_true: int
    message: str

    def level(self, figures: dict) -> tuple[int, str]:
        return (self.level_if_true, self.message) if figures.get(self.key) else (OK, "")


def assess(figures: dict, checks: list) -> tuple[int, str]:
    """(worst level, '; '-joined reasons of that level, or 'OK')."""
    found = [check.level(figures) for check in checks]
    worst = max((level for level, _ in found), default=OK)
    reasons = [message for level, message in found if level == worst and message]
    return worst, "; ".join(reasons) if worst != OK else "OK"

