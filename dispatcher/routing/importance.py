"""Effective importance of an event type (SPEC §2).

Lookup order, as in cPanel: the config's `importance:` entry for the exact type (`Backup/Failure`), then the
entry for its whole application (`Backup/*`), then the catalog's default for the type, then Low. A type the
catalog does not know is an "Uncategorized Notification" (`Application/base`): after its own entries, the
config's entry for `Application/base` decides, as the Contact Manager's setting for that alert type does;
it is Low otherwise, never the catalog's default for `Application/base`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..levels import Importance

if TYPE_CHECKING:
    from ..catalog import AlertType, Catalog
    from ..config import Config

# The alert type of every event type the catalog does not know ("Uncategorized Notifications").
FALLBACK_TYPE = "Application/base"
# The importance of a type nothing says anything about (the cPanel default).
DEFAULT_IMPORTANCE = Importance.LOW


@dataclass(frozen=True, slots=True)
class ImportanceSource:
    """An effective importance and where it came from.

    `origin` is `"config"` (the exact type's entry), `"config App/*"` (the application's entry), `"catalog"` (the
    alert type's default), `"config Application/base"` (an unknown type, by the fallback's entry) or `"default"`
    (nothing said anything: Low).
    """

    importance: Importance
    origin: str


def resolve_importance(
    event_type: str, overrides: Mapping[str, Importance], catalog_default: Importance | None
) -> ImportanceSource:
    """The importance of `event_type` given the config's `overrides` and the catalog's default (None if unknown)."""
    if event_type in overrides:
        return ImportanceSource(overrides[event_type], "config")
    app_entry = f"{event_type.partition('/')[0]}/*"
    if app_entry in overrides:
        return ImportanceSource(overrides[app_entry], "config App/*")
    if catalog_default is not None:
        return ImportanceSource(catalog_default, "catalog")
    if FALLBACK_TYPE in overrides:
        return ImportanceSource(overrides[FALLBACK_TYPE], f"config {FALLBACK_TYPE}")
    return ImportanceSource(DEFAULT_IMPORTANCE, "default")


def explain_importance(event_type: str, config: Config, catalog: Catalog) -> ImportanceSource:
    """`effective_importance` together with the rule that decided it (for `dispatcher catalog` and `routes`)."""
    default = catalog.get(event_type).importance if catalog.known(event_type) else None
    return resolve_importance(event_type, config.importance, default)


def effective_importance(event_type: str, config: Config, catalog: Catalog) -> Importance:
    """The importance an event of `event_type` is delivered at: config exact, config `App/*`, catalog, else Low."""
    return explain_importance(event_type, config, catalog).importance


def importance_for_alert(event_type: str, config: Config, alert: AlertType) -> Importance:
    """`effective_importance` when only the type's catalog entry is at hand (a recipient source gets no catalog).

    `alert` is `catalog.get(event_type)`: its default counts only when it is the type's own entry, not the
    `Application/base` fallback of an unknown type.
    """
    default = alert.importance if alert.key == event_type else None
    return resolve_importance(event_type, config.importance, default).importance
