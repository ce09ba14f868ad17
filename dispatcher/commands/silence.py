"""`dispatcher silence add|list|expire`: maintenance windows from the command line (SPEC §8a).

    dispatcher silence add -c FILE --match KEY=GLOB… (--for DURATION | --until TIME) --comment TEXT [--created-by N]
    dispatcher silence list -c FILE [--state active|expired] [--json]
    dispatcher silence expire -c FILE ID

`add` and `expire` write the store directly, beside a running daemon, as `dispatcher retry` does: the daemon reads
the active silences at each planning round, so a new silence applies to the next event it plans. `add` prints the
new silence's id. `list` opens the store read-only and shows every silence, newest first, with its state.

KEY is `type`, `account` or `host`; GLOB a shell-style pattern (`Backup/*`). DURATION is `90s`, `30m`, `2h`, `1d`
or `1h30m`; TIME an RFC 3339 time (`2026-11-23T22:00:00Z`), a local date and time (`2026-11-23 22:00`), or a
local time of day (`22:00`: the next time the clock reads it). `--created-by` defaults to the login name.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from ..errors import DispatcherError, StoreError, UsageError
from ..noise.durations import parse_duration
from ..noise.silences import (
    MATCHER_KEYS,
    SCHEMA,
    STATES,
    BadSilence,
    Silence,
    add_silence,
    expire_silence,
    list_silences,
    new_silence,
)
from ..store import Store, store_exists
from .catalog import format_table
from .common import SubParsers, add_config_option, config_from, print_out

if TYPE_CHECKING:
    from ..engines import Connection

T = TypeVar("T")

_TIME_OF_DAY_RE = re.compile(r"\d{1,2}:\d{2}(:\d{2})?")


def add_parser(sub: SubParsers) -> None:
    parser = sub.add_parser("silence", help="add, list or expire silences (maintenance windows)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    add = actions.add_parser("add", help="silence the events a set of matchers fits, for a while; prints its id")
    add_config_option(add)
    add.add_argument(
        "--match",
        metavar="KEY=GLOB",
        action="append",
        default=[],
        required=True,
        help=f"a matcher (repeatable): KEY is one of {', '.join(MATCHER_KEYS)}; GLOB a pattern such as Backup/*",
    )
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="duration", metavar="DURATION", help="how long: 90s, 30m, 2h, 1d, 1h30m")
    until.add_argument(
        "--until", metavar="TIME", help="when it ends: 2026-11-23T22:00:00Z, a local '2026-11-23 22:00', or '22:00'"
    )
    add.add_argument("--comment", required=True, help="why (shown in the reason of every delivery it stops)")
    add.add_argument("--created-by", metavar="NAME", help="who makes it (default: the login name)")
    add.set_defaults(handler=handle_add)

    listing = actions.add_parser("list", help="list silences, newest first, with their state")
    add_config_option(listing)
    listing.add_argument("--state", choices=STATES, help="only silences in this state")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=handle_list)

    expire = actions.add_parser("expire", help="end a silence now")
    add_config_option(expire)
    expire.add_argument("id", metavar="ID", help="the silence's id (as `add` printed it, or `list` shows it)")
    expire.set_defaults(handler=handle_expire)


# -- add ------------------------------------------------------------------------------------------------------------


def parse_matchers(pairs: list[str]) -> dict[str, str]:
    """`["type=Backup/*", "host=web1*"]` → `{"type": "Backup/*", "host": "web1*"}`; UsageError for a pair that is
    not KEY=GLOB or a key given twice (the glob itself is checked with the rest of the silence)."""
    matchers: dict[str, str] = {}
    for pair in pairs:
        key, sep, glob = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--match expects KEY=GLOB, got {pair!r}")
        if key in matchers:
            raise UsageError(f"--match {key} is given twice")
        matchers[key] = glob
    return matchers


def parse_until(text: str, now: datetime) -> datetime:
    """When `--until TIME` ends, as an aware datetime: an RFC 3339 time as it is; a date and time without offset in
    this machine's time zone; a time of day (`22:00`) the next time the local clock reads it after `now`."""
    cleaned = text.strip()
    local_now = now.astimezone()
    if _TIME_OF_DAY_RE.fullmatch(cleaned):
        try:
            at = datetime.strptime(cleaned, "%H:%M:%S" if cleaned.count(":") == 2 else "%H:%M").time()
        except ValueError:
            raise UsageError(f"--until: {text!r} is not a time of day") from None
        candidate = datetime.combine(local_now.date(), at).astimezone()
        return candidate if candidate > now else datetime.combine(local_now.date() + timedelta(days=1), at).astimezone()
    try:
        moment = datetime.fromisoformat(cleaned.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--until expects 2026-11-23T22:00:00Z, a local '2026-11-23 22:00' or a time of day '22:00', got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def handle_add(args: argparse.Namespace) -> int:
    config = config_from(args)
    matchers = parse_matchers(args.match)
    now = time.time()
    duration_s: float | None = None
    ends_at: datetime | None = None
    if args.duration is not None:
        try:
            duration_s = parse_duration(args.duration)
        except ValueError as err:
            raise UsageError(f"--for: {err}") from None
    else:
        ends_at = parse_until(args.until, datetime.fromtimestamp(now, UTC))
    try:
        silence = new_silence(
            matchers,
            comment=args.comment,
            now=now,
            duration_s=duration_s,
            ends_at=ends_at,
            created_by=args.created_by if args.created_by is not None else _login_name(),
        )
    except BadSilence as err:
        problems = "; ".join(_as_options(problem) for problem in err.problems)
        raise UsageError(f"cannot make that silence: {problems}") from None
    where = config.store.where
    if not store_exists(where):
        raise DispatcherError(f"no store at {where}: the daemon has not run with this config yet")
    asyncio.run(_in_store(Store(where, schemas=[SCHEMA]), lambda conn: add_silence(conn, silence)))
    print(silence.id)
    return 0


def _as_options(problem: str) -> str:
    """A problem as `new_silence` words it, in the command line's terms (`--comment` for `comment`)."""
    for field, option in (
        ("matchers.", "--match "),
        ("matchers:", "--match:"),
        ("comment:", "--comment:"),
        ("created_by:", "--created-by:"),
        ("duration_s:", "--for:"),
        ("ends_at:", "--until:"),
    ):
        if problem.startswith(field):
            return option + problem[len(field) :]
    return problem


def _login_name() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container), no USER/LOGNAME
        return None


# -- list, expire ---------------------------------------------------------------------------------------------------


def handle_list(args: argparse.Namespace) -> int:
    config = config_from(args)
    where = config.store.where
    if not store_exists(where):
        raise DispatcherError(f"no store at {where}: the daemon has not run with this config yet")
    now = time.time()
    store = Store(where, readonly=True)
    try:
        silences = asyncio.run(_in_store(store, lambda conn: list_silences(conn, now=now, state=args.state)))
    except StoreError as err:
        raise DispatcherError(f"cannot read the silences of the store at {store.shown}: {err}") from err
    if args.json:
        print(json.dumps([silence.to_json(now) for silence in silences], indent=2, ensure_ascii=False))
        return 0
    print_out(silence_table(silences, now))
    return 0


def silence_table(silences: list[Silence], now: float) -> list[str]:
    """The table `silence list` prints: id, state, end (UTC), matchers, who, comment."""
    if not silences:
        return ["no silences"]
    rows = [
        [
            silence.id,
            silence.state(now),
            _when(silence.ends_at),
            silence.describe_matchers(),
            silence.created_by or "-",
            silence.comment,
        ]
        for silence in silences
    ]
    return format_table(["ID", "STATE", "ENDS (UTC)", "MATCHERS", "CREATED BY", "COMMENT"], rows)


def handle_expire(args: argparse.Namespace) -> int:
    config = config_from(args)
    where = config.store.where
    if not store_exists(where):
        raise DispatcherError(f"no store at {where}: the daemon has not run with this config yet")
    now = time.time()
    silence = asyncio.run(_in_store(Store(where, schemas=[SCHEMA]), lambda conn: expire_silence(conn, args.id, now)))
    if silence is None:
        raise DispatcherError(f"no silence {args.id!r} (`dispatcher silence list` shows them)")
    print(f"expired: {silence.id}")
    return 0


async def _in_store(store: Store, fn: Callable[[Connection], T]) -> T:
    """Open `store` (a writable one is migrated, as by any writer), run `fn` in one transaction, close it."""
    await store.open()
    try:
        return await store.run(fn)
    finally:
        await store.close()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
