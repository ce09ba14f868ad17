"""Quiet hours' window (dispatcher/noise/quiet_hours.py): computed in the contact's zone, day by day, then in UTC.

Unit tests of the window function, the daylight saving time days above all: a night when the clocks go forward is
an hour shorter, one when they go back an hour longer; a wall-clock edge that does not happen is the instant the
clocks jump; one that happens twice is its first occurrence. (The daemon's deferral is tested in
test_noise_daemon.py.)
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dispatcher.levels import Importance
from dispatcher.noise.quiet_hours import QuietHours, deferral, parse_clock, parse_zone, wall_clock_instant, window_at

BERLIN = ZoneInfo("Europe/Berlin")
# 2026: Europe goes forward on 29 March (02:00 CET → 03:00 CEST, at 01:00 UTC) and back on 25 October
# (03:00 CEST → 02:00 CET, at 01:00 UTC); New York forward on 8 March (02:00 EST → 03:00 EDT, at 07:00 UTC).
SPRING = date(2026, 3, 29)
AUTUMN = date(2026, 10, 25)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def night(start: str = "22:00", end: str = "07:00", zone: str = "Europe/Berlin") -> QuietHours:
    return QuietHours(start=parse_clock(start), end=parse_clock(end), timezone=zone)


# -- one wall-clock time ---------------------------------------------------------------------------------------------


def test_an_ordinary_time_is_that_reading_of_the_clock() -> None:
    """07:00 in Berlin is 06:00 UTC in winter and 05:00 UTC in summer."""
    assert wall_clock_instant(date(2026, 1, 15), time(7), BERLIN) == utc(2026, 1, 15, 6)
    assert wall_clock_instant(date(2026, 7, 15), time(7), BERLIN) == utc(2026, 7, 15, 5)


def test_a_time_the_clocks_skip_is_the_instant_they_jump() -> None:
    """02:30 does not happen in Berlin on 29 March 2026 (01:59:59 CET is followed by 03:00:00 CEST): it means 01:00
    UTC, the first moment the clock reads 02:30 or later; so does 02:00, the start of the gap. New York's gap is
    the same at its own hour."""
    assert wall_clock_instant(SPRING, time(2, 30), BERLIN) == utc(2026, 3, 29, 1)
    assert wall_clock_instant(SPRING, time(2, 0), BERLIN) == utc(2026, 3, 29, 1)
    assert wall_clock_instant(SPRING, time(2, 59, 59), BERLIN) == utc(2026, 3, 29, 1)
    assert wall_clock_instant(SPRING, time(3, 0), BERLIN) == utc(2026, 3, 29, 1)
    assert wall_clock_instant(SPRING, time(1, 59, 59), BERLIN) == utc(2026, 3, 29, 0, 59, 59)
    assert wall_clock_instant(date(2026, 3, 8), time(2, 30), ZoneInfo("America/New_York")) == utc(2026, 3, 8, 7)


def test_a_half_hour_gap_is_found_too() -> None:
    """Lord Howe Island (UTC+10:30 in winter) moves its clocks by 30 minutes (02:00 → 02:30 on 4 October 2026, at
    15:30 UTC the day before): 02:15 is the instant of that jump."""
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert wall_clock_instant(date(2026, 10, 4), time(2, 15), lord_howe) == utc(2026, 10, 3, 15, 30)


def test_a_time_that_happens_twice_is_its_first_occurrence() -> None:
    """02:30 happens twice in Berlin on 25 October 2026: at 00:30 UTC (CEST) and at 01:30 UTC (CET); it means the
    first."""
    assert wall_clock_instant(AUTUMN, time(2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)
    assert wall_clock_instant(AUTUMN, time(3, 30), BERLIN) == utc(2026, 10, 25, 2, 30)


# -- the window --------------------------------------------------------------------------------------------------


def test_a_window_across_midnight_covers_both_evenings_and_mornings() -> None:
    """22:00-07:00 in Berlin (winter, UTC+1): 23:30 local holds until 07:00 the next day; 03:00 local until 07:00
    that day; 07:00 and 21:59 are outside."""
    q = night()
    assert window_at(q, utc(2026, 1, 15, 22, 30)) == (utc(2026, 1, 15, 21), utc(2026, 1, 16, 6))
    assert window_at(q, utc(2026, 1, 16, 2)) == (utc(2026, 1, 15, 21), utc(2026, 1, 16, 6))
    assert window_at(q, utc(2026, 1, 16, 6)) is None
    assert window_at(q, utc(2026, 1, 15, 20, 59, 59)) is None
    assert window_at(q, utc(2026, 1, 15, 21)) is not None


def test_a_window_within_one_day() -> None:
    """12:00-14:00 UTC: inside at 12:00 and 13:59:59, outside at 14:00 and 11:59."""
    q = night("12:00", "14:00", "UTC")
    assert window_at(q, utc(2026, 5, 1, 12)) == (utc(2026, 5, 1, 12), utc(2026, 5, 1, 14))
    assert window_at(q, utc(2026, 5, 1, 13, 59, 59)) is not None
    assert window_at(q, utc(2026, 5, 1, 14)) is None
    assert window_at(q, utc(2026, 5, 1, 11, 59)) is None


def test_the_night_the_clocks_go_forward_is_an_hour_shorter() -> None:
    """22:00 CET on 28 March (21:00 UTC) to 07:00 CEST on 29 March (05:00 UTC): 8 hours, and 07:00 is still 07:00
    on the wall."""
    start, end = window_at(night(), utc(2026, 3, 29, 1, 30)) or (None, None)
    assert (start, end) == (utc(2026, 3, 28, 21), utc(2026, 3, 29, 5))
    assert end is not None and end.astimezone(BERLIN).time() == time(7)
    assert end - start == timedelta(hours=8)  # type: ignore[operator]


def test_the_night_the_clocks_go_back_is_an_hour_longer() -> None:
    """22:00 CEST on 24 October (20:00 UTC) to 07:00 CET on 25 October (06:00 UTC): 10 hours; the repeated hour
    (01:00-02:00 UTC) is inside once and stays inside."""
    q = night()
    for moment in (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 5, 59)):
        assert window_at(q, moment) == (utc(2026, 10, 24, 20), utc(2026, 10, 25, 6))


def test_a_window_ending_in_the_gap_ends_when_the_clocks_jump() -> None:
    """22:00-02:30 on the night into 29 March: 02:30 never happens, so the window ends at 03:00 CEST (01:00 UTC);
    a delivery at 01:45 CET waits until then, and the reason says 03:00."""
    q = night("22:00", "02:30")
    planned = utc(2026, 3, 29, 0, 45)
    assert window_at(q, planned) == (utc(2026, 3, 28, 21), utc(2026, 3, 29, 1))
    assert deferral(q, planned.timestamp()) == (
        utc(2026, 3, 29, 1).timestamp(),
        "quiet hours until 03:00 Europe/Berlin",
    )
    assert window_at(q, utc(2026, 3, 29, 1)) is None


def test_a_window_ending_in_the_repeated_hour_ends_at_its_first_pass() -> None:
    """22:00-02:30 on the night into 25 October: it ends the first time the clock reads 02:30 (00:30 UTC, CEST) and
    does not start again when the clock reads 02:15 a second time (01:15 UTC, CET)."""
    q = night("22:00", "02:30")
    assert window_at(q, utc(2026, 10, 25, 0, 15)) == (utc(2026, 10, 24, 20), utc(2026, 10, 25, 0, 30))
    assert window_at(q, utc(2026, 10, 25, 0, 45)) is None
    assert window_at(q, utc(2026, 10, 25, 1, 15)) is None


def test_a_window_starting_in_the_gap_starts_when_the_clocks_jump() -> None:
    """02:30-06:00 on 29 March starts at 03:00 CEST (01:00 UTC) and ends at 06:00 CEST (04:00 UTC)."""
    q = night("02:30", "06:00")
    assert window_at(q, utc(2026, 3, 29, 0, 59, 59)) is None
    assert window_at(q, utc(2026, 3, 29, 1)) == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 4))


def test_a_window_starting_in_the_repeated_hour_starts_at_its_first_pass() -> None:
    """02:30-04:00 on 25 October starts at the first 02:30 (00:30 UTC) and ends at 04:00 CET (03:00 UTC): 2.5 hours."""
    q = night("02:30", "04:00")
    assert window_at(q, utc(2026, 10, 25, 0, 30)) == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 3))
    assert window_at(q, utc(2026, 10, 25, 0, 29)) is None


def test_a_window_wholly_inside_the_gap_does_not_happen_that_day() -> None:
    """02:10-02:50 on 29 March: both edges are the same instant, so nothing is inside; the next day it is back."""
    q = night("02:10", "02:50")
    for minute in range(0, 120, 5):
        assert window_at(q, utc(2026, 3, 29, 0) + timedelta(minutes=minute)) is None
    assert window_at(q, utc(2026, 3, 30, 0, 20)) == (utc(2026, 3, 30, 0, 10), utc(2026, 3, 30, 0, 50))


# -- what is held back, and the settings' values -------------------------------------------------------------------


def test_channels_and_except_decide_what_is_held_back() -> None:
    """Only the listed channels wait; an importance at or above `except` goes at once."""
    q = QuietHours(time(22), time(7), "Europe/Berlin", channels=frozenset({"pushbullet"}), except_=Importance.MEDIUM)
    assert q.holds_back("pushbullet", Importance.LOW)
    assert not q.holds_back("pushbullet", Importance.MEDIUM)
    assert not q.holds_back("pushbullet", Importance.HIGH)
    assert not q.holds_back("email", Importance.LOW)
    every = QuietHours(time(22), time(7), "UTC")
    assert every.holds_back("email", Importance.HIGH) and every.holds_back("posturl", Importance.LOW)


def test_the_reason_shows_seconds_only_when_the_end_has_them() -> None:
    """`quiet hours until 07:00 UTC`, and `… until 10:00:05 UTC` for an end with seconds."""
    assert deferral(night("22:00", "07:00", "UTC"), utc(2026, 5, 1, 23).timestamp()) == (
        utc(2026, 5, 2, 7).timestamp(),
        "quiet hours until 07:00 UTC",
    )
    assert deferral(night("09:00", "10:00:05", "UTC"), utc(2026, 5, 1, 10).timestamp()) == (
        utc(2026, 5, 1, 10, 0, 5).timestamp(),
        "quiet hours until 10:00:05 UTC",
    )


@pytest.mark.parametrize("text", ["24:00", "7", "07:60", "7:00:61", "07-00", "", "noon", "07:00:00:00"])
def test_a_time_of_day_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="time of day"):
        parse_clock(text)


def test_times_of_day_are_read_with_or_without_seconds() -> None:
    assert parse_clock("7:05") == time(7, 5)
    assert parse_clock("23:59:59") == time(23, 59, 59)


@pytest.mark.parametrize("name", ["Europe/Berlinn", "Mars/Olympus", "../etc/passwd", ""])
def test_an_unknown_zone_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_zone(name)
