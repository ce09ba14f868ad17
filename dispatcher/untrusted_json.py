"""JSON from outside (a publisher on the bus, a client of the HTTP API), decoded so that no input can raise
anything but `UntrustedJsonError`, and nothing decoded can fail later where it is stored, pickled or rendered.

Python's `json` accepts more than JSON and less than arbitrary bytes: `NaN` and `Infinity`, lone UTF-16
surrogates (`"\\ud800"`, which no UTF-8 encoder, SQLite's included, will write), and it raises `RecursionError`
on deep nesting and `ValueError` on integers of more than 4,300 digits. Here each of those is refused with a
message that says what is wrong:

- the bytes must be UTF-8 and one JSON value;
- numbers must be finite, integers at most `MAX_INT_DIGITS` digits;
- strings (keys too) must be valid Unicode: a lone surrogate is refused, never replaced, so what is stored is
  what was sent or nothing;
- arrays and objects may nest at most `MAX_DEPTH` deep.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Deeper than any event or contact a person writes, and far below what Python's recursion (json, pickle,
# Jinja2) survives.
MAX_DEPTH = 32
# Ample for any count or size a service reports; a number longer than this is not data but an attack on
# int() (CPython's own limit, 4,300 digits, costs milliseconds per number).
MAX_INT_DIGITS = 100
# How much of a bad value an error message quotes.
QUOTE_CHARS = 40


class UntrustedJsonError(ValueError):
    """The input is not JSON this program accepts; the message says why, quoting at most QUOTE_CHARS of it."""


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)`, cut to about `limit` characters with `…` when longer: safe to put in an error or a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decode(data: bytes | bytearray | str, *, what: str = "body") -> Any:
    """Decode one JSON value from untrusted input, or raise UntrustedJsonError naming `what` and the fault."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as err:
            raise UntrustedJsonError(f"{what} is not UTF-8: {err.reason} at byte {err.start}") from None
    else:
        text = data
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except json.JSONDecodeError as err:
        raise UntrustedJsonError(
            f"{what} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except UntrustedJsonError as err:
        raise UntrustedJsonError(f"{what} is not acceptable JSON: {err}") from None
    except RecursionError:
        raise UntrustedJsonError(f"{what} nests arrays or objects more than {MAX_DEPTH} deep") from None
    except ValueError as err:  # anything else json or int() may raise on hostile input
        raise UntrustedJsonError(f"{what} is not acceptable JSON: {quote(str(err), 80)}") from None
    fault = find_fault(value)
    if fault:
        raise UntrustedJsonError(f"{what} {fault}")
    return value


def find_fault(value: Any) -> str | None:
    """What makes an already-decoded value unstorable (too deep, a lone surrogate), or None. Iterative: a value
    nested deeper than the interpreter's recursion limit is measured without recursing. A bad string is named by
    where it is (`data.x`, `[2]`), never quoted: it may be a password or a token."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if not _is_valid_unicode(item):
                return f"has a string that is not valid Unicode (a lone surrogate) at {_place(path)}"
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return f"nests arrays or objects more than {MAX_DEPTH} deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and not _is_valid_unicode(key):
                        return f"has a key that is not valid Unicode (a lone surrogate) in {_place(path)}"
                    stack.append((child, depth + 1, f"{path}.{key}" if path else str(key)))
            else:
                stack.extend((child, depth + 1, f"{path}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return f"has a number that is not finite at {_place(path)}"
    return None


def _place(path: str) -> str:
    """Where in the value: the path, cut like a quoted value (keys come from outside too)."""
    if not path:
        return "the top"
    return path if len(path) <= QUOTE_CHARS * 2 else path[: QUOTE_CHARS * 2 - 1] + "…"


def _is_valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_constant(name: str) -> Any:
    raise UntrustedJsonError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise UntrustedJsonError(f"the number {quote(text)} is out of range")
    return number


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise UntrustedJsonError(f"an integer has {digits} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)
