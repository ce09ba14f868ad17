"""The alert-type catalog: every alert type the daemon knows, read from the shipped `catalog.yaml` (SPEC §2).

Each type is keyed by its template stem `App/Event` (the event type) and says who may hear of it (`audience`),
which account preference gates it, which WHMCS email category carries it to billing contacts, its default
importance, the `data` fields its templates use (each with its meaning and an example: the contract between
publishers and template writers), and what the event's `account` is, when its templates name one. Unknown types
resolve to the `Application/base` entry, the fallback "Uncategorized Notifications" at Low importance.

The file is data, validated as a whole when loaded: a broken catalog raises `CatalogError` naming the entry
and line, rather than failing later in the middle of routing an event.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog
import yaml

from dispatcher.errors import DispatcherError
from dispatcher.levels import Importance

log = structlog.get_logger(__name__)

FALLBACK_TYPE = "Application/base"
AUDIENCES = frozenset({"system", "account"})
# The WHMCS email preference categories (seed 002, `email_preferences[...]`).
CATEGORIES = frozenset({"general", "product", "domain", "invoice", "support", "affiliate"})
# The notify_* preferences of seed 000 that can gate a notice, with the words cPanel shows for each in the account's
# Contact Information (`descp`; the footer of an account's notice names the one that stops it). The
# `*_notification_disabled` keys are guards (they decide whether the account hears that a preference was switched
# off), never a type's gate.
PREFERENCE_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "notify_account_authn_link": "An external account links to my account for authentication.",
        "notify_account_login": "Someone logs in to my account.",
        "notify_account_login_for_known_netblock": (
            "Send login notifications, even when the user logs in from an IP address range or netblock that "
            "contains an IP address from which a user successfully logged in previously."
        ),
        "notify_autossl_expiry": "AutoSSL certificate expiry.",
        "notify_autossl_expiry_coverage": (
            "AutoSSL cannot renew a certificate because domains that fail Domain Control Validation exist on the "
            "current certificate."
        ),
        "notify_autossl_renewal": "AutoSSL has renewed a certificate.",
        "notify_autossl_renewal_coverage": (
            "AutoSSL cannot add any additional domains because domains that fail Domain Control Validation exist "
            "on the current certificate."
        ),
        "notify_autossl_renewal_coverage_reduced": (
            "AutoSSL has renewed a certificate, but the new certificate lacks at least one domain that the previous "
            "certificate secured."
        ),
        "notify_bandwidth_limit": "My account approaches its bandwidth usage limit.",
        "notify_contact_address_change": "My contact email address changes.",
        "notify_disk_limit": "My account approaches its disk quota.",
        "notify_email_quota_limit": "Any of my account's email accounts approaches or is over quota.",
        "notify_password_change": "My account's password changes.",
        "notify_ssl_expiry": "SSL certificate expiry.",
        "notify_twofactorauth_change": "My account's two-factor authentication configuration changes.",
    }
)
PREFERENCES = frozenset(PREFERENCE_LABELS)

# The same shape events.py accepts for `type`, so every catalog key is a type an event can carry.
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ENTRY_KEYS = frozenset({"name", "trigger", "importance", "audience", "preference", "category", "fields"})
_OPTIONAL_KEYS = frozenset({"aliases", "account"})
# A described field (`{meaning: …, example: …}`); any other value of `fields:` is a bare example (the first format).
_DESCRIBED_KEYS = frozenset({"meaning", "example"})


class CatalogError(DispatcherError):
    """The catalog file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class Alias:
    """Another alert type of the Contact Manager table that uses the same template, so shares its key."""

    name: str
    trigger: str


@dataclass(frozen=True)
class DataField:
    """One value an event of a type carries: its name, what it means (None when the catalog does not say) and an
    example value."""

    name: str
    meaning: str | None
    example: Any


@dataclass(frozen=True)
class AlertType:
    """One alert type: what it is, who may receive it, and the `data` fields its templates use.

    `audience` holds `"system"` (root's contacts) and/or `"account"` (the account's own contacts);
    `preference` is the notify_* key that gates delivery to the account, None when nothing does;
    `category` is the WHMCS email category for billing contacts, None for server-internal notices;
    `fields` maps each data field to an example value; `aliases` lists other alert types sharing the template;
    `data_fields` describes the same fields in the same order (name, meaning, example); `account` says what the
    event's `account` is for this type (a `DataField` named `account`), None when its templates name no account.
    An entry built with `fields` alone gets `data_fields` without meanings.
    """

    key: str
    name: str
    trigger: str
    importance: Importance
    audience: frozenset[str]
    preference: str | None
    category: str | None
    fields: Mapping[str, Any]
    aliases: tuple[Alias, ...] = field(default=())
    data_fields: Mapping[str, DataField] = field(default_factory=lambda: MappingProxyType({}))
    account: DataField | None = None

    def __post_init__(self) -> None:
        if not self.data_fields and self.fields:
            described = {name: DataField(name, None, example) for name, example in self.fields.items()}
            object.__setattr__(self, "data_fields", MappingProxyType(described))

    @property
    def app(self) -> str:
        """The application half of the key: `AutoSSL` for `AutoSSL/CertificateInstalled`."""
        return self.key.split("/", 1)[0]

    @property
    def event(self) -> str:
        """The event half of the key: `CertificateInstalled` for `AutoSSL/CertificateInstalled`."""
        return self.key.split("/", 1)[1]


class Catalog:
    """The known alert types by key; lookups of unknown types give the `Application/base` fallback."""

    def __init__(self, types: Mapping[str, AlertType]) -> None:
        if FALLBACK_TYPE not in types:
            raise CatalogError(f"catalog has no {FALLBACK_TYPE} entry (the fallback for unknown types)")
        self._types: Mapping[str, AlertType] = MappingProxyType({key: types[key] for key in sorted(types)})

    def get(self, type_key: str) -> AlertType:
        """The entry for `type_key`, or the `Application/base` entry when the type is unknown."""
        return self._types.get(type_key) or self._types[FALLBACK_TYPE]

    def known(self, type_key: str) -> bool:
        """Whether `type_key` has an entry of its own."""
        return type_key in self._types

    @property
    def fallback(self) -> AlertType:
        """The `Application/base` entry."""
        return self._types[FALLBACK_TYPE]

    def keys(self) -> tuple[str, ...]:
        """Every type key, sorted."""
        return tuple(self._types)

    def __contains__(self, type_key: object) -> bool:
        return type_key in self._types

    def __iter__(self) -> Iterator[AlertType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    def __repr__(self) -> str:
        return f"<Catalog {len(self._types)} types>"


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate a catalog: the shipped `catalog.yaml` when `path` is None (loaded once, then cached).

    Raises `CatalogError` naming the file, line and entry of the first problems found.
    """
    if path is None:
        return _shipped_catalog()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(f"cannot read catalog {path}: {err}") from err
    return parse_catalog(text, source=str(path))


@functools.cache
def _shipped_catalog() -> Catalog:
    resource = importlib.resources.files(__name__) / "catalog.yaml"
    try:
        text = resource.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(f"cannot read the shipped catalog {resource}: {err}") from err
    catalog = parse_catalog(text, source="dispatcher/catalog/catalog.yaml")
    log.debug("catalog_loaded", types=len(catalog))
    return catalog


def parse_catalog(text: str, *, source: str = "<catalog>") -> Catalog:
    """Build a `Catalog` from YAML text; `source` names the text in error messages."""
    try:
        # The C loader when PyYAML has libyaml: the catalog is large enough for the difference to show.
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise CatalogError(f"{source}: invalid YAML: {err}") from err

    if not isinstance(data, dict) or set(data) != {"types"} or not isinstance(data["types"], dict):
        raise CatalogError(f"{source}: expected a mapping with the single key `types:` (type key -> entry)")
    lines = _entry_lines(root)
    problems: list[str] = []
    types: dict[str, AlertType] = {}
    for key, entry in data["types"].items():
        where = f"{source}:{lines.get(key, '?')}: {key}"
        try:
            types[key] = _parse_entry(key, entry)
        except _EntryProblem as err:
            problems.extend(f"{where}: {problem}" for problem in err.problems)
    if FALLBACK_TYPE not in data["types"]:
        problems.append(f"{source}: no {FALLBACK_TYPE} entry (the fallback for unknown types)")
    if problems:
        shown = problems[:10]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise CatalogError("invalid catalog: " + "; ".join(shown) + more)
    return Catalog(types)


class _EntryProblem(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _entry_lines(root: yaml.Node | None) -> dict[Any, int]:
    """1-based line of each type key, for error messages."""
    if not isinstance(root, yaml.MappingNode):
        return {}
    for key_node, value_node in root.value:
        if key_node.value == "types" and isinstance(value_node, yaml.MappingNode):
            return {k.value: k.start_mark.line + 1 for k, _ in value_node.value}
    return {}


def _parse_entry(key: Any, entry: Any) -> AlertType:
    """Validate one entry; raises `_EntryProblem` listing everything wrong with it."""
    problems: list[str] = []
    if not isinstance(key, str) or not _KEY_RE.match(key):
        problems.append("the key is not of the form App/Event")
    if not isinstance(entry, dict):
        raise _EntryProblem([*problems, "the entry is not a mapping"])
    missing = _ENTRY_KEYS - entry.keys()
    unknown = entry.keys() - _ENTRY_KEYS - _OPTIONAL_KEYS
    if missing:
        problems.append(f"missing keys: {', '.join(sorted(missing))}")
    if unknown:
        problems.append(f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
    if missing:
        raise _EntryProblem(problems)

    for text_key in ("name", "trigger"):
        if not isinstance(entry[text_key], str) or not entry[text_key].strip():
            problems.append(f"{text_key} must be a non-empty string")

    importance = Importance.LOW
    try:
        importance = Importance.parse(entry["importance"])
    except ValueError as err:
        problems.append(f"importance: {err}")

    audience_raw = entry["audience"]
    if (
        not isinstance(audience_raw, list)
        or not audience_raw
        or not all(isinstance(a, str) and a in AUDIENCES for a in audience_raw)
        or len(set(audience_raw)) != len(audience_raw)
    ):
        problems.append(f"audience must be a non-empty list of distinct values from {sorted(AUDIENCES)}")
        audience: frozenset[str] = frozenset()
    else:
        audience = frozenset(audience_raw)

    preference = entry["preference"]
    if preference is not None and preference not in PREFERENCES:
        problems.append(f"preference {preference!r} is not a notify_* preference of cPanel contact information")
    elif preference is not None and "account" not in audience:
        # A preference only gates delivery to the account's contacts; without them it would gate nothing.
        problems.append(f"preference {preference!r} given but the audience has no `account`")

    category = entry["category"]
    if category is not None and category not in CATEGORIES:
        problems.append(f"category {category!r} is not one of {sorted(CATEGORIES)} or null")

    fields = entry["fields"]
    data_fields: dict[str, DataField] = {}
    if not isinstance(fields, dict) or not all(isinstance(f, str) and _FIELD_RE.match(f) for f in fields):
        problems.append("fields must map snake_case field names to {meaning, example} (or to example values)")
    else:
        for name, value in fields.items():
            try:
                data_fields[name] = _data_field(name, value)
            except ValueError as err:
                problems.append(f"field {name}: {err}")

    account: DataField | None = None
    if "account" in entry:
        try:
            account = _data_field("account", entry["account"])
        except ValueError as err:
            problems.append(f"account: {err}")
        else:
            if account.meaning is None or not isinstance(account.example, str) or not account.example:
                problems.append("account must be {meaning, example} with an account name as the example")

    aliases: list[Alias] = []
    raw_aliases = entry.get("aliases", [])
    if not isinstance(raw_aliases, list):
        problems.append("aliases must be a list of {name, trigger}")
        raw_aliases = []
    for alias in raw_aliases:
        if (
            not isinstance(alias, dict)
            or set(alias) != {"name", "trigger"}
            or not all(isinstance(alias[k], str) and alias[k].strip() for k in ("name", "trigger"))
        ):
            problems.append(f"alias {alias!r} must be a mapping with a non-empty name and trigger")
            continue
        aliases.append(Alias(name=alias["name"].strip(), trigger=alias["trigger"].strip()))

    if problems:
        raise _EntryProblem(problems)
    return AlertType(
        key=key,
        name=entry["name"].strip(),
        trigger=entry["trigger"].strip(),
        importance=importance,
        audience=audience,
        preference=preference,
        category=category,
        fields=MappingProxyType({name: described.example for name, described in data_fields.items()}),
        aliases=tuple(aliases),
        data_fields=MappingProxyType(data_fields),
        account=account,
    )


def _data_field(name: str, value: Any) -> DataField:
    """A field of the YAML as a `DataField`: `{meaning: text, example: value}`, or a bare example value (the
    catalog's first format, without a meaning). Raises ValueError for a described field that is malformed."""
    if not isinstance(value, dict) or "meaning" not in value:
        return DataField(name, None, value)
    if set(value) != _DESCRIBED_KEYS:
        raise ValueError("a described field has exactly the keys `meaning` and `example`")
    meaning = value["meaning"]
    if not isinstance(meaning, str) or not meaning.strip():
        raise ValueError("meaning must be a non-empty string")
    return DataField(name, " ".join(meaning.split()), value["example"])


__all__ = [
    "AUDIENCES",
    "CATEGORIES",
    "FALLBACK_TYPE",
    "PREFERENCES",
    "PREFERENCE_LABELS",
    "AlertType",
    "Alias",
    "Catalog",
    "CatalogError",
    "DataField",
    "load_catalog",
    "parse_catalog",
]
