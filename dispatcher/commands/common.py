"""What the subcommands share: the `-c FILE` option, loading the config, `--data K=V` parsing, writing output that
survives a closed pipe, and the warnings about an event's data that `publish` and `render` print."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ..catalog import FALLBACK_TYPE, Catalog
from ..config import Config, default_config, load_config
from ..errors import UsageError
from ..render import bridge_templates


class SubParsers(Protocol):
    """What `ArgumentParser.add_subparsers()` returns, as far as a command needs it (argparse names its class
    privately)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_config_option(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", required=required, help="the YAML configuration file")


def config_from(args: argparse.Namespace) -> Config:
    """The config named by `-c`, or the built-in defaults when the command allows none."""
    return load_config(args.config) if args.config else default_config()


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="K=V",
        action="append",
        default=[],
        help="a data field (repeatable); V is read as JSON when it parses (numbers, true, lists), else as a string",
    )


def parse_data(pairs: list[str]) -> dict[str, Any]:
    """`["domain=example.com", "days=3"]` → `{"domain": "example.com", "days": 3}`."""
    data: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--data expects K=V, got {pair!r}")
        try:
            data[key] = json.loads(value)
        except json.JSONDecodeError:
            data[key] = value
    return data


# -- output ------------------------------------------------------------------------------------------------------


def print_out(lines: Iterable[str]) -> None:
    """Print `lines` on stdout, flushed.

    When the reader has gone (`dispatcher catalog | head`), the rest is dropped quietly: stdout is pointed at
    /dev/null, so neither later output nor the interpreter's final flush raises `BrokenPipeError`, and the command
    ends as it would have, without a traceback.
    """
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        drop_stdout()


def drop_stdout() -> None:
    """The reader of stdout has gone: point stdout at /dev/null, so that later writes and the interpreter's final
    flush do not raise `BrokenPipeError` again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def warn(message: str) -> None:
    """One warning line on stderr: `dispatcher: warning: …` (not an error: the command goes on)."""
    print(f"dispatcher: warning: {message}", file=sys.stderr)


# -- what an event's data should hold -----------------------------------------------------------------------------


def _given(value: Any) -> bool:
    """Whether a value says something: templates read null and blank strings as not given."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def suggest_type(catalog: Catalog, event_type: str) -> str:
    """` (did you mean Backup/Failure?)` for a type close to a known one (a typo), else an empty string."""
    close = difflib.get_close_matches(event_type, catalog.keys(), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_type_warning(catalog: Catalog, event_type: str) -> str | None:
    """For a type the catalog does not know: that it goes out with the generic template (and the nearest known
    type, for a typo); None for a known type."""
    if event_type in catalog:
        return None
    return (
        f"{event_type} is not a catalog type{suggest_type(catalog, event_type)}: it goes out at its configured "
        f"importance (else low) with the generic {FALLBACK_TYPE} template, which lists every data field; "
        "`dispatcher catalog` lists the types"
    )


def unknown_fields_warning(catalog: Catalog, event_type: str, data: Mapping[str, Any]) -> str | None:
    """For data fields the type's templates do not use (they would be ignored): which ones, and the type's own
    fields; None when there are none, for types rendered with the generic template (it shows every field), and for
    an event a bridge brought in (`data._bridge`: its bridge's templates show its subject, its body and the rest)."""
    if event_type not in catalog or event_type == FALLBACK_TYPE or bridge_templates(data) is not None:
        return None
    alert = catalog.get(event_type)
    unknown = [name for name in data if name not in alert.fields]
    if not unknown:
        return None
    hint = ""
    if "user" in unknown and alert.account is not None:
        hint = "; the account goes in the event's `account` (--account), not in data"
    known = ", ".join(alert.fields) or "none"
    return (
        f"{event_type} does not use the data field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
        f"its messages will not show {'them' if len(unknown) > 1 else 'it'} (its fields: {known}){hint}"
    )


def missing_fields(catalog: Catalog, event_type: str, data: Mapping[str, Any], account: str | None) -> list[str]:
    """What the type's templates use and the event does not give: `account` first (when its templates name the
    account), then the data fields, in the catalog's order. Null and blank values count as not given. Empty for
    types rendered with the generic template, and for an event a bridge brought in: its bridge's templates read
    none of the type's fields, and say so themselves when the bridge sent no subject or body."""
    if event_type not in catalog or event_type == FALLBACK_TYPE or bridge_templates(data) is not None:
        return []
    alert = catalog.get(event_type)
    missing = ["account"] if alert.account is not None and not account else []
    missing.extend(name for name in alert.fields if not _given(data.get(name)))
    return missing


def missing_fields_warning(event_type: str, missing: list[str], *, filled_with_examples: bool = False) -> str | None:
    """The warning line for `missing_fields`: what the messages will lack, or which example values stand in."""
    if not missing:
        return None
    names = ", ".join("account (--account)" if name == "account" else name for name in missing)
    if filled_with_examples:
        return f"{event_type}: not given, shown with the catalog's example values: {names}"
    return f'{event_type}: not given, so its messages leave them out or show "(not given)": {names}'


__all__ = [
    "add_config_option",
    "add_data_option",
    "config_from",
    "missing_fields",
    "missing_fields_warning",
    "parse_data",
    "print_out",
    "suggest_type",
    "unknown_fields_warning",
    "unknown_type_warning",
    "warn",
]
