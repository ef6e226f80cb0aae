"""The store's clock: what time rows are stamped with (``created_at``, ``at``, ``updated_at``, ...).

A :class:`~engine.store.Store` is given one (``clock=``), so a test or a simulation can fix the time;
the default reads the real UTC clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]  # an aware datetime: the time now


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(moment: dt.datetime) -> str:
    """A time as rows hold it: ISO 8601 in UTC, to the microsecond.  ValueError for a naive one, whose
    zone would be a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"the store's clock gave {moment.isoformat()}, a time without a zone: give an aware one")
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _now() -> str:
    """The real clock's time, stamped (for code that is given no clock)."""
    return stamp(utc_now())
