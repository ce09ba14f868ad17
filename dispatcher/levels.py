"""Importance of an event and a channel's threshold, with cPanel's numbering.

cPanel numbers importance High = 1, Medium = 2, Low = 3, Disabled = 0, and a channel's threshold
is the lowest importance it receives: None = 0, High only = 1, High and Medium = 2, All = 3.
A channel gets an event when `threshold >= importance` and the importance is not Disabled.
"""

from __future__ import annotations

import enum


class Importance(enum.IntEnum):
    DISABLED = 0
    HIGH = 1
    MEDIUM = 2
    LOW = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Importance:
        """`"high"` → `Importance.HIGH`; raises ValueError naming the allowed values."""
        try:
            return cls[name.strip().upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"unknown importance {name!r} (expected high, medium, low or disabled)") from None


class Threshold(enum.IntEnum):
    NONE = 0
    HIGH = 1
    MEDIUM = 2
    ALL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Threshold:
        """`"medium"` → `Threshold.MEDIUM`; raises ValueError naming the allowed values."""
        try:
            return cls[name.strip().upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"unknown threshold {name!r} (expected none, high, medium or all)") from None


def threshold_admits(threshold: Threshold, importance: Importance) -> bool:
    """Whether a channel with `threshold` receives an event of `importance`."""
    return importance != Importance.DISABLED and int(threshold) >= int(importance)
