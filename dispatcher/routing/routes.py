"""Routing rules (`routes:`): which system contacts get an event (SPEC §3, §10).

Rules are tried in order. The first rule whose `match` fits decides, unless it has `continue: true`: then later
fitting rules add their contacts too, until one without `continue` fits (Alertmanager's semantics). When no rule
fits, every system contact gets the event. A rule with an empty match fits every event.

A match fits when every field it sets fits: `type`, `account`, `host` and each `data` value are shell-style globs
(`Backup/*`), `app` is the exact application name, and `min_importance` admits events at or above that importance
(High is above Medium). An event without an account never fits a rule that sets `account`; one without a data
field never fits a rule that sets that field.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from ..levels import Importance

if TYPE_CHECKING:
    from ..config import Config, RouteMatch
    from ..events import Event


def select_contacts(event: Event, importance: Importance, config: Config) -> tuple[list[str], list[int]]:
    """The system contacts' names that get `event`, and the indexes (0-based) of the rules that fitted.

    Names come in the order the rules list them, each once; with no fitting rule, every contact in config order
    (and an empty list of rules).
    """
    names: list[str] = []
    matched: list[int] = []
    for index, route in enumerate(config.routes):
        if not route_matches(route.match, event, importance):
            continue
        matched.append(index)
        names.extend(name for name in route.to if name not in names)
        if not route.continue_:
            break
    if not matched:
        return list(config.contacts), []
    return names, matched


def route_matches(match: RouteMatch, event: Event, importance: Importance) -> bool:
    """Whether every field `match` sets fits `event` at `importance`."""
    if match.type is not None and not fnmatchcase(event.type, match.type):
        return False
    if match.app is not None and event.app != match.app:
        return False
    if match.min_importance is not None and not importance_at_least(importance, match.min_importance):
        return False
    if match.account is not None and (event.account is None or not fnmatchcase(event.account, match.account)):
        return False
    # Host names are case-insensitive.
    if match.host is not None and not fnmatchcase(event.host.lower(), match.host.lower()):
        return False
    for key, pattern in match.data.items():
        if key not in event.data or not fnmatchcase(data_text(event.data[key]), pattern):
            return False
    return True


def importance_at_least(importance: Importance, minimum: Importance) -> bool:
    """Whether `importance` is at or above `minimum` (cPanel numbers High = 1, so lower is more important).

    A disabled event is above nothing.
    """
    return importance != Importance.DISABLED and int(importance) <= int(minimum)


def data_text(value: Any) -> str:
    """The text a data value is matched as: a string as it is, anything else as JSON (`true`, `3`, `null`).

    JSON rather than `str()` so that a rule written `ok: "true"` fits the JSON value `true` the event carried.
    """
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)
