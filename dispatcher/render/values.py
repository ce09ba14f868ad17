"""How event data reads in a template: missing data, and how a bare `{{ value }}` prints.

A field that was not given is a `ReadableUndefined`: it prints `(not given)` (`NOT_GIVEN`), is false, iterates as
empty and stays undefined through `.attr` chains, comparisons and arithmetic, so a template written for complete
data still renders for partial data. `finalize` is the environment's `finalize` (None, lists and mappings as a
reader sees them); `is_missing` is what the filters and the `given` test count as not given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from markupsafe import Markup

NOT_GIVEN = "(not given)"


class ReadableUndefined(jinja2.ChainableUndefined):
    """What a template sees for data that was not given: prints `(not given)`, is false, empty and chainable.

    `data.cert.domains` on missing data is still undefined rather than an error, comparisons are false and
    arithmetic stays undefined, so a template written for complete data still renders for partial data.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return NOT_GIVEN

    def __html__(self) -> str:
        return NOT_GIVEN

    def _false(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def _self(self, *args: Any, **kwargs: Any) -> ReadableUndefined:
        return self

    __lt__ = __le__ = __gt__ = __ge__ = _false  # type: ignore[assignment]
    __add__ = __radd__ = __sub__ = __rsub__ = _self  # type: ignore[assignment]
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _self  # type: ignore[assignment]
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __rpow__ = _self  # type: ignore[assignment]
    __pos__ = __neg__ = _self  # type: ignore[assignment]

    # Jinja's Undefined raises on int() and float() (typed as returning Never); missing data reads as 0 instead.
    def __int__(self) -> int:  # type: ignore[override]
        return 0

    def __float__(self) -> float:  # type: ignore[override]
        return 0.0


def is_missing(value: Any) -> bool:
    return value is None or isinstance(value, jinja2.Undefined)


def finalize(value: Any) -> Any:
    """How a bare `{{ value }}` prints: None as `(not given)`, lists as `a, b, c`, mappings as `k: v, …`."""
    kind = type(value)
    if kind is str or kind is int or kind is Markup:  # nearly every value: skip the checks below
        return value
    if value is None:
        return NOT_GIVEN
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(finalize(item)) for item in value) or "(none)"
    if isinstance(value, Mapping) and not isinstance(value, jinja2.Undefined):
        return ", ".join(f"{key}: {finalize(item)}" for key, item in value.items()) or "(none)"
    return value
