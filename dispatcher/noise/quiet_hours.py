"""Quiet hours of a system contact (SPEC §8a): deliveries planned inside the window wait for its end.

    contacts:
      root:
        quiet_hours: {from: "22:00", to: "07:00", timezone: Europe/Berlin, channels: [pushbullet], except: high}

A delivery to the contact on one of `channels` (every channel when the key is left out) whose planning time falls
inside the window is deferred, never dropped: it is recorded pending, with its first attempt at the window's end
and the reason `quiet hours until 07:00 Europe/Berlin`. An event whose importance is at or above `except` goes at
once. `from` and `to` are wall-clock times (`HH:MM` or `HH:MM:SS`) in `timezone` (an IANA name); `from` later than
`to` makes a window that crosses midnight; the two must differ.

Daylight saving time: the window's edges are computed in the zone, day by day, and then converted to UTC, so
"07:00" is 07:00 local time in summer and in winter, and a night when the clocks change is an hour shorter or
longer. A wall-clock time that happens twice (clocks go back) means its first occurrence; one that does not happen
(clocks go forward across it) means the instant the clocks jump, the first moment the clock reads that time or
later. So a window always ends the first time the clock says `to`, and starts the first time it says `from`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..levels import Importance
from ..routing.routes import importance_at_least

_CLOCK_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


@dataclass(frozen=True)
class QuietHours:
    """A contact's quiet hours: `start` (the config's `from`) to `end` (`to`), wall-clock times in `timezone`.

    `channels`: the channels it holds back (None: every channel). `except_`: the importance at and above which a
    delivery goes at once (None: nothing does).
    """

    start: time
    end: time
    timezone: str
    channels: frozenset[str] | None = None
    except_: Importance | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def holds_back(self, channel: str, importance: Importance) -> bool:
        """Whether a delivery on `channel` of an event at `importance` waits for the window's end (when inside it)."""
        if self.channels is not None and channel not in self.channels:
            return False
        return not (self.except_ is not None and importance_at_least(importance, self.except_))

    def describe(self) -> str:
        """`22:00-07:00 Europe/Berlin` (for logs and `dispatcher routes`)."""
        return f"{clock_text(self.start)}-{clock_text(self.end)} {self.timezone}"


def parse_clock(text: str) -> time:
    """`"22:00"` or `"06:30:15"` → a `time`; ValueError naming the expected form otherwise."""
    match = _CLOCK_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a time of day HH:MM or HH:MM:SS, got {text!r}")
    hour, minute, second = (int(part) if part is not None else 0 for part in match.groups())
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"expected a time of day from 00:00 to 23:59:59, got {text!r}")
    return time(hour, minute, second)


def parse_zone(name: str) -> str:
    """An IANA time zone name (`Europe/Berlin`, `UTC`) that this system's zone database knows, as given."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name such as Europe/Berlin or UTC)") from None
    return name


def clock_text(moment: time) -> str:
    """`07:00`, or `07:00:30` when the seconds are not zero."""
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


def wall_clock_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The first instant (in UTC) at which the clocks of `zone` read `at` on `day`.

    A time that happens twice that day (the clocks go back) gives its first occurrence. A time that does not happen
    (the clocks go forward across it) gives the instant they jump: the first moment they read `at` or later.
    """
    naive = datetime.combine(day, at)
    readings = sorted({naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)})
    for instant in readings:
        if _local(instant, zone) == naive:
            return instant
    # In a gap: the earlier reading falls before the jump (the clocks show less than `at`), the later one after it.
    # Transitions fall on whole seconds: search between the two for the first second that reads `at` or later.
    before, after = int(readings[0].timestamp()), math.ceil(readings[-1].timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        if _local(datetime.fromtimestamp(middle, UTC), zone) < naive:
            before = middle
        else:
            after = middle
    return datetime.fromtimestamp(after, UTC)


def _local(instant: datetime, zone: ZoneInfo) -> datetime:
    """The wall-clock reading of `instant` in `zone`, without its zone (for comparing readings)."""
    return instant.astimezone(zone).replace(tzinfo=None)


def window_at(quiet: QuietHours, now: datetime) -> tuple[datetime, datetime] | None:
    """The window of `quiet` that `now` (an aware datetime) falls in, as (start, end) in UTC; None outside.

    The window that began on the local day before `now`'s is looked at too: it is the one `now` falls in after
    midnight when the window crosses it. A window that does not happen on a day (both edges in a gap) is empty.
    """
    zone = quiet.zone
    today = now.astimezone(zone).date()
    crosses_midnight = quiet.start > quiet.end
    for day in (today - timedelta(days=1), today):
        start = wall_clock_instant(day, quiet.start, zone)
        end = wall_clock_instant(day + timedelta(days=1) if crosses_midnight else day, quiet.end, zone)
        if start <= now < end:
            return start, end
    return None


def deferral(quiet: QuietHours, now_s: float) -> tuple[float, str] | None:
    """When a delivery planned at `now_s` (epoch seconds) inside `quiet`'s window may go (the window's end, epoch
    seconds), and the reason it waits (`quiet hours until 07:00 Europe/Berlin`); None outside the window."""
    window = window_at(quiet, datetime.fromtimestamp(now_s, UTC))
    if window is None:
        return None
    end = window[1]
    local_end = end.astimezone(quiet.zone).time()
    return end.timestamp(), f"quiet hours until {clock_text(local_end)} {quiet.timezone}"
